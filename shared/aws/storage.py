"""S3 access for media and stage artifacts (JSON documents under artifacts/<job_id>/).

`ObjectStore` is what the stages use; `Storage` is it on S3 and
`shared.fakes.MemoryStorage` in memory (contract: tests/integration/test_adapters.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from shared.domain.errors import InputError
from shared.domain.findings import DocumentT, parse_document

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

    async def presigned_post(self, key: str, content_type: str, max_bytes: int, expires_in: int) -> PresignedPost:
        """A form upload S3 itself bounds (see `post_conditions`)."""

    async def list_keys(self, prefix: str, bucket: str | None = None) -> list[str]: ...

    async def delete_keys(self, keys: list[str], bucket: str | None = None) -> int:
        """Delete these objects (missing ones are no error); how many were asked for."""

    async def abort_uploads(self, prefix: str) -> int:
        """Abort unfinished multipart uploads under `prefix`; how many."""

    async def unfinished_uploads(self, prefix: str) -> int:
        """How many multipart uploads under `prefix` are open."""


@dataclass(frozen=True)
class PresignedPost:
    url: str
    fields: dict[str, str]


def post_conditions(content_type: str, max_bytes: int) -> list:
    """What S3 checks on a presigned POST besides the key it was signed for: the exact
    content type, and a body of 1 byte to `max_bytes` (an oversized or retyped file is refused)."""
    return [{"Content-Type": content_type}, ["content-length-range", 1, max_bytes]]


async def read_document(storage: ObjectStore, key: str, model: type[DocumentT], what: str) -> DocumentT:
    """A stage's JSON document at `key`, parsed once as `model`. One that is not JSON or does not parse is
    an InputError naming `what` and what is wrong (retrying reads the same bytes, so the job fails at
    once), and the document stays in S3 as it was, for a person to read."""
    try:
        document = await storage.get_json(key)
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        raise InputError(f"{what} is not JSON: {error}") from None
    return parse_document(model, document, what)


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
        # the bucket policy refuses a request asking for any other (shared.runtime.infra).
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

    async def presigned_post(self, key: str, content_type: str, max_bytes: int, expires_in: int) -> PresignedPost:
        return await sign_post(self._s3, self.bucket, key, content_type, max_bytes, expires_in)

    async def list_keys(self, prefix: str, bucket: str | None = None) -> list[str]:
        pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=bucket or self.bucket, Prefix=prefix)
        return [item["Key"] async for page in pages for item in page.get("Contents", [])]

    async def delete_keys(self, keys: list[str], bucket: str | None = None) -> int:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            response = await self._s3.delete_objects(
                Bucket=bucket or self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True})
            if response.get("Errors"):
                first = response["Errors"][0]
                raise RuntimeError(f"S3 refused to delete {len(response['Errors'])} objects: {first.get('Code')}")
        return len(keys)

    async def unfinished_uploads(self, prefix: str) -> int:
        response = await self._s3.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return len(response.get("Uploads", []))

    async def abort_uploads(self, prefix: str) -> int:
        response = await self._s3.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        uploads = response.get("Uploads", [])
        for upload in uploads:
            await self._s3.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
        return len(uploads)


async def sign_post(s3: Any, bucket: str, key: str, content_type: str, max_bytes: int, expires_in: int) -> PresignedPost:
    """A presigned POST (aiobotocore's async signer, or boto3's for a client aimed at a public endpoint)."""
    signed = s3.generate_presigned_post(bucket, key, Fields={"Content-Type": content_type},
                                        Conditions=post_conditions(content_type, max_bytes), ExpiresIn=expires_in)
    if hasattr(signed, "__await__"):
        signed = await signed
    return PresignedPost(url=signed["url"], fields=dict(signed["fields"]))


def _code(error: Exception) -> str | None:
    return (getattr(error, "response", None) or {}).get("Error", {}).get("Code")


def _is_missing(error: Exception) -> bool:
    return _code(error) in ("NoSuchKey", "404", "NotFound", "NoSuchBucket")
