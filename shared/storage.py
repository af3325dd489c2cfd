"""S3 access for media and stage artifacts (JSON documents under artifacts/<job_id>/).

`ObjectStore` is what the stages use; `Storage` is it on S3 and
`shared.fakes.MemoryStorage` in memory (contract: tests/integration/test_adapters.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

from shared.errors import InputError

_CHUNK = 1024 * 1024


class MediaUnavailable(InputError):
    """The media object is missing or may not be read; the message says which, for people.
    No retry brings it back, so the job fails with it."""


class ObjectStore(Protocol):
    bucket: str

    async def download(self, key: str, dest: Path, bucket: str | None = None) -> int:
        """Stream an object to a file; returns its size. MediaUnavailable if it cannot be read."""

    async def exists(self, key: str, bucket: str | None = None) -> bool: ...

    async def put_json(self, key: str, document: dict[str, Any]) -> None: ...

    async def put_bytes(self, key: str, body: bytes, content_type: str) -> None: ...

    async def get_json(self, key: str) -> dict[str, Any]: ...

    async def presigned_upload(self, key: str, content_type: str, expires_in: int) -> str: ...


class Storage:
    """`ObjectStore` on S3."""

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    async def download(self, key: str, dest: Path, bucket: str | None = None) -> int:
        """Stream an object to a file; returns its size. MediaUnavailable if it is
        not there or SchizoDot's role may not read it (S3 answers 403, not 404, for a
        missing key to a caller that may not list the bucket)."""
        where = f"s3://{bucket or self.bucket}/{key}"
        try:
            response = await self._s3.get_object(Bucket=bucket or self.bucket, Key=key)
        except Exception as error:
            if _is_missing(error):
                raise MediaUnavailable(f"the media file does not exist: {where}") from error
            if _code(error) in ("AccessDenied", "403"):
                raise MediaUnavailable(
                    f"the media file does not exist or SchizoDot may not read it (access denied): {where}"
                ) from error
            raise
        size = 0
        async with response["Body"] as body:
            with open(dest, "wb") as out:
                while chunk := await body.read(_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
        return size

    async def exists(self, key: str, bucket: str | None = None) -> bool:
        try:
            await self._s3.head_object(Bucket=bucket or self.bucket, Key=key)
            return True
        except Exception as error:
            if _is_missing(error):
                return False
            raise

    async def put_json(self, key: str, document: dict[str, Any]) -> None:
        await self.put_bytes(key, json.dumps(document, separators=(",", ":")).encode(), "application/json")

    async def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        # No encryption header: the bucket's default (SSE-KMS with SchizoDot's key) applies, and
        # the bucket policy refuses a request asking for any other (shared.infra).
        await self._s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type)

    async def get_json(self, key: str) -> dict[str, Any]:
        response = await self._s3.get_object(Bucket=self.bucket, Key=key)
        async with response["Body"] as body:
            return json.loads(await body.read())

    async def presigned_upload(self, key: str, content_type: str, expires_in: int) -> str:
        return await self._s3.generate_presigned_url(
            "put_object",
            Params={"Bucket": self.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires_in,
        )


def _code(error: Exception) -> str | None:
    return (getattr(error, "response", None) or {}).get("Error", {}).get("Code")


def _is_missing(error: Exception) -> bool:
    return _code(error) in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")
