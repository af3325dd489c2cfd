"""Sending a check-in's file the way `POST /api/v1/analyze` answered (docs/uploads.md), for the
command line, the demo, the benches and the tests: a PUT of the file to the ingest API with the
same credential (upload mode "proxy"), or S3's presigned POST form (mode "presigned")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from schizodot.resilience import RETRIED_STATUSES, RetryPolicy, ServiceUnreachable, http_request

# S3 may also answer 500 InternalError to a presigned POST; sending the same bytes again is safe.
UPLOAD_RETRIED_STATUSES = RETRIED_STATUSES | {500}


def upload_arguments(created: dict[str, Any], filename: str, data: bytes, content_type: str,
                     credential: dict[str, str]) -> dict[str, Any]:
    """httpx request arguments (method, url and the rest) for `data`, as the analyze answer `created` says."""
    if created.get("upload_method") == "PUT":
        return {"method": "PUT", "url": created["upload_url"], "content": data,
                "headers": {**credential, "Content-Type": content_type}}
    # The presigned POST carries its own signature: the credential never goes to S3.
    return {"method": "POST", "url": created["upload_url"], "data": created["upload_fields"],
            "files": {"file": (filename, data, content_type)}}


@dataclass(frozen=True)
class Sent:
    """How an upload ended: `response` is the upload's last answer; `received_before` says that answer was
    409 because an earlier try (whose answer was lost) had already stored the recording."""

    response: httpx.Response
    received_before: bool = False

    @property
    def ok(self) -> bool:
        return self.received_before or self.response.status_code in (200, 201, 204)


def send_recording(http: httpx.Client, created: dict[str, Any], filename: str, data: bytes, content_type: str,
                   credential: dict[str, str], *, status_url: str, policy: RetryPolicy) -> Sent:
    """Send the check-in's file as `created` (the analyze answer) says, retrying within `policy`'s deadline.

    A try may be cut off after the API stored the file, or while it still stores it; the next try then gets
    409. So a 409 is answered by reading the check-in (`status_url`, ingest's job status): if it no longer
    waits for its recording, the file is in (`received_before`); if it still does, another try is still being
    sent, or died, and this one waits (Retry-After) and sends again: the API accepts it once that one stops
    or goes stale (docs/uploads.md)."""
    def still_waiting(response: httpx.Response) -> bool:
        return response.status_code == 409 and _awaits_recording(http, status_url, credential, policy)

    upload = upload_arguments(created, filename, data, content_type, credential)
    response = http_request(http, upload.pop("method"), upload.pop("url"), policy=policy,
                            what="uploading the check-in", retry_statuses=UPLOAD_RETRIED_STATUSES,
                            retry_when=still_waiting, **upload)
    # A 409 not retried: the check-in no longer waited for its recording when it was read.
    return Sent(response, received_before=response.status_code == 409)


def _awaits_recording(http: httpx.Client, status_url: str, credential: dict[str, str], policy: RetryPolicy) -> bool:
    answer = http_request(http, "GET", status_url, policy=policy, what="reading the check-in", headers=credential)
    if answer.status_code != 200:
        raise ServiceUnreachable(f"reading the check-in after a 409: the ingest API answered {answer.status_code}")
    return bool(answer.json().get("awaiting_recording", False))
