"""What the console reads and writes through, as small interfaces the results
service satisfies with its adapters (and tests with the in-memory fakes):

- `JobStore` (shared.aws.jobs): SchizodotJobs, typed `Job`s;
- `HistoryReader` (shared.aws.history): SchizodotUsers, read by the stored patient key;
- the clinic's roster and alert store (services.results.alerts);
- `MediaLinks`: short-lived presigned GETs for the video and evidence frames;
- `shared.identity.audit.AuditTrail`: every page, export and acknowledgement records one
  `AuditEvent` before anything is served; if recording fails, the request fails
  (PHI is never served unaudited).
"""

from __future__ import annotations

from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.identity.audit import AuditEvent

__all__ = ["AuditEvent", "MediaLinks", "S3MediaLinks"]


class MediaLinks(Protocol):
    origin: str  # scheme://host[:port] the browser fetches media from (for the page's CSP)

    async def presign_get(self, key: str, expires_in: int) -> str: ...


class S3MediaLinks:
    """`MediaLinks` on S3: `signer` is a botocore client aimed at the endpoint browsers reach."""

    def __init__(self, signer: Any, bucket: str) -> None:
        self._signer = signer
        self._bucket = bucket
        probe = urlsplit(signer.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "k"},
                                                       ExpiresIn=60))
        self.origin = f"{probe.scheme}://{probe.netloc}"

    async def presign_get(self, key: str, expires_in: int) -> str:
        return self._signer.generate_presigned_url("get_object", Params={"Bucket": self._bucket, "Key": key},
                                                   ExpiresIn=expires_in)
