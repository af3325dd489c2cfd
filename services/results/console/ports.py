"""What the console reads and writes through, as small interfaces the results
service satisfies with its adapters (and tests with fakes):

- `ConsoleJobs`: SchizodotJobs (shared.jobs.JobsRepository has these methods);
- `ResultsHistory`: SchizodotUsers (shared.history.PatientHistory has these methods);
- the clinic's roster and alert store (services.results.alerts);
- `MediaLinks`: short-lived presigned GETs for the video and evidence frames;
- `AuditTrail`: issue 12's audit trail. Every page, export and acknowledgement
  records one event before anything is served; if recording fails, the request
  fails (PHI is never served unaudited).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

from shared.identity import Principal


class ConsoleJobs(Protocol):
    async def get(self, job_id: str) -> dict[str, Any] | None: ...
    async def list_for_patient(self, patient_id: str, limit: int = 20,
                               status: str | None = None) -> list[dict[str, Any]]: ...


class ResultsHistory(Protocol):
    async def latest(self, patient_id: str, limit: int = 10) -> list[dict[str, Any]]: ...
    async def for_job(self, patient_id: str, job_id: str) -> dict[str, Any] | None: ...


class MediaLinks(Protocol):
    origin: str  # scheme://host[:port] the browser fetches media from (for the page's CSP)

    async def presign_get(self, key: str, expires_in: int) -> str: ...


@dataclass(frozen=True)
class AuditEvent:
    action: str  # console.patient_list, console.patient_view, console.checkin_view, console.media_get, ...
    principal: Principal
    outcome: str = "success"  # success | not_found
    patient_id: str | None = None
    job_id: str | None = None
    alert_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class AuditTrail(Protocol):
    async def record(self, event: AuditEvent) -> None: ...


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


class RecordingAudit:
    """An `AuditTrail` that keeps events in a list (for tests)."""

    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    async def record(self, event: AuditEvent) -> None:
        self.events.append(event)
