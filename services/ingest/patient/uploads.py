"""Resumable uploads straight from the patient's phone to S3, bounded by S3 itself.

The page never gets a URL that could store more than the service allows:

- `CreateMultipartUpload` is made here with the content type fixed, under the
  job's own key (the page cannot name a key).
- The page declares the recording's size; the service refuses a size over
  `max_bytes` and plans the parts: every part `part_bytes` long except the last.
- Each `UploadPart` URL is presigned with its part's exact `Content-Length`
  among the signed headers, so S3 refuses a body of any other length
  (SignatureDoesNotMatch), and part numbers stop at `max_parts`
  (= ceil(max_bytes / part_bytes)). S3 therefore never holds more than
  `max_parts * part_bytes`.
- Completing is done here too, from S3's own `ListParts`: the parts must be
  1..n with the planned sizes and add up to the declared size, which is again
  checked against `max_bytes`. The page never sends ETags, so the bucket's CORS
  rule need not expose them.
- Resuming after a dropped connection asks S3 which parts it already holds
  (`ListParts`) and signs fresh URLs for the rest. An upload S3 no longer knows
  (aborted, or expired by a lifecycle rule) cannot be resumed: `UploadGone`.

S3 requires every part but the last to be at least 5 MiB (`S3_MIN_PART_BYTES`);
a deployment's `part_bytes` should respect that (the tests use smaller parts
against an S3 emulator configured to allow them).
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

S3_MIN_PART_BYTES = 5 * 1024**2
S3_MAX_PARTS = 10_000
RECORDING_TYPES = ("video/webm", "video/mp4", "video/quicktime")  # what MediaRecorder gives, by browser

# How phones send recordings (docs/uploads.md): through the ingest API, which writes them to S3 itself
# ("proxy": the storage endpoint is never handed out), or straight to S3 with presigned requests
# ("presigned": real S3 only, where the storage endpoint is built to face the internet).
UploadMode = Literal["proxy", "presigned"]


class UploadRefused(ValueError):
    """The upload asked for cannot be allowed; the message says why, for a person."""


class UploadGone(Exception):
    """S3 no longer knows this multipart upload (aborted or expired): it cannot be resumed."""


class RecordingExists(Exception):
    """S3 already holds an object at the key: a completion that would replace it was refused."""


@dataclass(frozen=True)
class PartPlan:
    number: int
    size: int


@dataclass(frozen=True)
class StoredPart:
    number: int
    size: int
    etag: str


@dataclass(frozen=True)
class OpenUpload:
    """A multipart upload in progress, and when S3 last saw it move: its initiation or its latest part."""

    upload_id: str
    last_activity: datetime

    def idle_seconds(self, now: datetime) -> float:
        return max(0.0, (now - self.last_activity).total_seconds())


@dataclass(frozen=True)
class MultipartPolicy:
    max_bytes: int
    part_bytes: int = 8 * 1024**2
    url_expiry_seconds: int = 900
    accepted_types: tuple[str, ...] = RECORDING_TYPES

    def __post_init__(self) -> None:
        if self.max_bytes < 1 or self.part_bytes < 1:
            raise ValueError("max_bytes and part_bytes must be positive")
        if self.max_parts > S3_MAX_PARTS:
            raise ValueError(f"max_bytes / part_bytes needs {self.max_parts} parts; S3 allows {S3_MAX_PARTS}")

    @property
    def max_parts(self) -> int:
        return math.ceil(self.max_bytes / self.part_bytes)

    def content_type(self, declared: str) -> str:
        """The recording's type without codec parameters ('video/webm;codecs=vp8' -> 'video/webm')."""
        base = (declared or "").split(";")[0].strip().lower()
        if base not in self.accepted_types:
            raise UploadRefused(f"a recording of type '{declared or '(none)'}' cannot be sent; "
                                f"the page records {', '.join(self.accepted_types)}")
        return base

    def plan(self, size: int) -> list[PartPlan]:
        if size < 1:
            raise UploadRefused("the recording is empty")
        if size > self.max_bytes:
            raise UploadRefused(f"the recording is {_mb(size)}; the most that can be sent is {_mb(self.max_bytes)}")
        count = math.ceil(size / self.part_bytes)
        return [PartPlan(n, self.part_bytes if n < count else size - self.part_bytes * (count - 1))
                for n in range(1, count + 1)]

    def check_complete(self, size: int, stored: list[StoredPart]) -> list[StoredPart]:
        """The parts to complete with, or UploadRefused when S3 holds anything but the plan."""
        planned = self.plan(size)
        by_number = {p.number: p for p in stored}
        missing = [p.number for p in planned if p.number not in by_number]
        if missing:
            raise UploadRefused(f"{len(missing)} of {len(planned)} parts have not arrived yet")
        extra = sorted(set(by_number) - {p.number for p in planned})
        wrong = [p.number for p in planned if by_number[p.number].size != p.size]
        if extra or wrong:
            raise UploadRefused("the parts received do not match the recording's declared size")
        return [by_number[p.number] for p in planned]


def _mb(size: int) -> str:
    return f"{size / 1024**2:.1f} MB"


class MultipartStore(Protocol):
    """The S3 operations a resumable upload needs (one bucket)."""

    async def create(self, key: str, content_type: str) -> str: ...
    async def presign_part(self, key: str, upload_id: str, number: int, size: int, expires_in: int) -> str: ...
    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]: ...
    async def complete(self, key: str, upload_id: str, parts: list[StoredPart], *, if_absent: bool = False) -> None: ...
    async def abort(self, key: str, upload_id: str) -> None: ...
    async def open_uploads(self, key: str) -> list[str]: ...
    async def open_upload_activity(self, key: str) -> list[OpenUpload]: ...
    async def exists(self, key: str) -> bool: ...
    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> StoredPart: ...


@dataclass
class S3MultipartStore:
    """`MultipartStore` on S3.

    `s3` is an async (aiobotocore) client for the calls; `signer` a botocore
    client used only to presign, aimed at the endpoint the phone reaches (on
    AWS the same; with a local emulator the public address of it). Signing is
    local computation, so a synchronous client is fine here.
    """

    s3: Any
    signer: Any
    bucket: str

    @property
    def origin(self) -> str:
        """scheme://host[:port] the phone uploads to (for the page's Content-Security-Policy)."""
        url = self.signer.generate_presigned_url(
            "upload_part", Params={"Bucket": self.bucket, "Key": "k", "UploadId": "u", "PartNumber": 1}, ExpiresIn=60)
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"

    async def create(self, key: str, content_type: str) -> str:
        # No encryption asked for: the bucket's default (SSE-KMS with the project's key, shared.runtime.infra)
        # applies, and its policy refuses a request naming another encryption.
        response = await self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=content_type)
        return response["UploadId"]

    async def presign_part(self, key: str, upload_id: str, number: int, size: int, expires_in: int) -> str:
        return self.signer.generate_presigned_url(
            "upload_part",
            Params={"Bucket": self.bucket, "Key": key, "UploadId": upload_id, "PartNumber": number,
                    "ContentLength": size},
            ExpiresIn=expires_in,
        )

    async def list_parts(self, key: str, upload_id: str) -> list[StoredPart]:
        pages = self.s3.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key, UploadId=upload_id)
        try:
            return [StoredPart(p["PartNumber"], p["Size"], p["ETag"]) async for page in pages for p in page.get("Parts", [])]
        except Exception as error:
            if _code(error) in ("NoSuchUpload", "404"):
                raise UploadGone(upload_id) from error
            raise

    async def complete(self, key: str, upload_id: str, parts: list[StoredPart], *, if_absent: bool = False) -> None:
        """`if_absent`: S3 itself refuses to complete over an object already at the key (If-None-Match: *),
        RecordingExists; so a late request can never replace what another one stored."""
        try:
            await self.s3.complete_multipart_upload(
                Bucket=self.bucket, Key=key, UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag} for p in parts]},
                **({"IfNoneMatch": "*"} if if_absent else {}),
            )
        except Exception as error:
            if _code(error) in ("NoSuchUpload", "404"):
                raise UploadGone(upload_id) from error
            if _code(error) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                raise RecordingExists(key) from error
            raise

    async def abort(self, key: str, upload_id: str) -> None:
        try:
            await self.s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception as error:
            if _code(error) not in ("NoSuchUpload", "404"):
                raise

    async def _listed(self, key: str) -> list[dict[str, Any]]:
        """ListMultipartUploads for exactly `key` (the prefix also matches longer keys)."""
        response = await self.s3.list_multipart_uploads(Bucket=self.bucket, Prefix=key)
        return [u for u in response.get("Uploads", []) if u["Key"] == key]

    async def open_uploads(self, key: str) -> list[str]:
        return [u["UploadId"] for u in await self._listed(key)]

    async def open_upload_activity(self, key: str) -> list[OpenUpload]:
        """The open uploads of `key` with S3's own times (ListMultipartUploads' Initiated, ListParts'
        LastModified), so every ingest replica judges an upload's activity alike."""
        found = []
        for upload in await self._listed(key):
            latest = upload["Initiated"]
            pages = self.s3.get_paginator("list_parts").paginate(Bucket=self.bucket, Key=key,
                                                                 UploadId=upload["UploadId"])
            try:
                async for page in pages:
                    latest = max([latest, *(p["LastModified"] for p in page.get("Parts", []))])
            except Exception as error:
                if _code(error) in ("NoSuchUpload", "404"):
                    continue  # completed or aborted since it was listed
                raise
            found.append(OpenUpload(upload["UploadId"], latest))
        return found

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> StoredPart:
        try:
            response = await self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                                 Body=body, ContentLength=len(body))
        except Exception as error:
            if _code(error) in ("NoSuchUpload", "404"):
                raise UploadGone(upload_id) from error
            raise
        return StoredPart(number, len(body), response["ETag"])

    async def exists(self, key: str) -> bool:
        try:
            await self.s3.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception as error:
            if _code(error) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise


# The first bytes of each container a check-in may be in: a file that does not start like its declared type
# is refused before anything is stored (ingest's probe, after the upload, checks the whole file).
_MP4_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip", b"pnot")
_SIGNATURES = {
    "video/webm": lambda head: head.startswith(b"\x1a\x45\xdf\xa3"),  # EBML (Matroska/WebM)
    "video/mp4": lambda head: head[4:8] in _MP4_BOXES,
    "video/quicktime": lambda head: head[4:8] in _MP4_BOXES,
    "audio/mp4": lambda head: head[4:8] in _MP4_BOXES,
    "video/x-msvideo": lambda head: head[:4] == b"RIFF" and head[8:12] == b"AVI ",
    "audio/wav": lambda head: head[:4] == b"RIFF" and head[8:12] == b"WAVE",
    "video/mpeg": lambda head: head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"),
    "audio/mpeg": lambda head: head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0),
}
SNIFF_BYTES = 12


def looks_like(content_type: str, head: bytes) -> bool:
    """Whether a file starting with `head` (at least SNIFF_BYTES, unless shorter) may be `content_type`;
    a type without a known signature is left to ingest's probe."""
    check = _SIGNATURES.get(content_type)
    return check is None or check(head)


async def stream_to_s3(store: MultipartStore, key: str, content_type: str, chunks: AsyncIterator[bytes], *,
                       part_bytes: int, max_bytes: int) -> int:
    """Write a request body to S3 as it arrives, as a multipart upload of `part_bytes` parts: memory holds
    one part and one chunk, never the file. UploadRefused (nothing kept) for an empty or oversized file or
    one that is not `content_type`; any failure aborts the upload, so S3 keeps nothing of it. The completion
    never replaces an object already at `key` (RecordingExists), and an upload aborted meanwhile (taken over
    by a newer request, docs/uploads.md) fails with UploadGone: such a request can store nothing."""
    upload_id = await store.create(key, content_type)
    parts: list[StoredPart] = []
    buffer = bytearray()
    total, sniffed = 0, False
    try:
        async for chunk in chunks:
            total += len(chunk)
            if total > max_bytes:
                raise UploadRefused(f"the recording is larger than the {_mb(max_bytes)} that can be sent")
            buffer += chunk
            if not sniffed and len(buffer) >= SNIFF_BYTES:
                if not looks_like(content_type, bytes(buffer[:SNIFF_BYTES])):
                    raise UploadRefused(f"the file is not a {content_type} recording")
                sniffed = True
            while len(buffer) >= part_bytes:
                parts.append(await store.upload_part(key, upload_id, len(parts) + 1, bytes(buffer[:part_bytes])))
                del buffer[:part_bytes]
        if total == 0:
            raise UploadRefused("the recording is empty")
        if not sniffed and not looks_like(content_type, bytes(buffer)):
            raise UploadRefused(f"the file is not a {content_type} recording")
        if buffer:
            parts.append(await store.upload_part(key, upload_id, len(parts) + 1, bytes(buffer)))
        await store.complete(key, upload_id, parts, if_absent=True)
    except BaseException:
        await store.abort(key, upload_id)
        raise
    return total


def _code(error: Exception) -> str | None:
    return (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
