"""Sending a check-in's file the way `POST /api/v1/analyze` answered (docs/uploads.md), for the
command line, the demo, the benches and the tests: a PUT of the file to the ingest API with the
same credential (upload mode "proxy"), or S3's presigned POST form (mode "presigned")."""

from __future__ import annotations

from typing import Any


def upload_arguments(created: dict[str, Any], filename: str, data: bytes, content_type: str,
                     credential: dict[str, str]) -> dict[str, Any]:
    """httpx request arguments (method, url and the rest) for `data`, as the analyze answer `created` says."""
    if created.get("upload_method") == "PUT":
        return {"method": "PUT", "url": created["upload_url"], "content": data,
                "headers": {**credential, "Content-Type": content_type}}
    # The presigned POST carries its own signature: the credential never goes to S3.
    return {"method": "POST", "url": created["upload_url"], "data": created["upload_fields"],
            "files": {"file": (filename, data, content_type)}}
