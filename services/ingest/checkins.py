"""How a check-in is made, whichever way it comes in (issue 20): one command and one handler.

- `POST /api/v1/analyze`: a clinic app's check-in, waiting for its upload (source "api");
- `POST /api/v1/patient-links`: a check-in for the patient to record (source "patient_link");
- an EHR's `checkin.submitted` event on the ingest queue, for media already in S3 (source
  "event"); the stage runner creates its job, so an event delivered twice makes one.

The command says who the check-in is of (the clinic and its own patient id) and what it holds;
`job()` derives the rest in one place: the stored patient key (`shared.identity.principal.patient_key`),
the key the recording is uploaded to (`shared.domain.checkin.upload_key`) unless the media is already
in S3, and the job's first message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shared.aws.jobs import JobStore
from shared.domain.checkin import upload_key, utc_now
from shared.domain.job import Job, new_job
from shared.domain.options import CheckinOptions
from shared.domain.patients import ClinicPatientId, PatientKey
from shared.domain.timeline import CheckinTimeline

Source = Literal["api", "patient_link", "event"]
FIRST_MESSAGE: dict[str, str] = {
    "api": "Waiting for the upload",
    "patient_link": "Waiting for the patient's recording",
    "event": "Check-in received from upstream system",
}


@dataclass(frozen=True)
class NewCheckin:
    """The command: a check-in of a clinic's patient."""

    job_id: str
    clinic_id: str
    patient_id: ClinicPatientId | str  # the clinic's own id; stored as the patient key
    filename: str
    content_type: str
    source: Source
    s3_key: str | None = None  # where the media already is (an EHR's); None: the upload key it goes to
    metadata: dict[str, Any] = field(default_factory=dict)
    options: CheckinOptions | None = None
    timeline: CheckinTimeline | None = None
    created_at: str = field(default_factory=utc_now)

    @property
    def stored_patient(self) -> PatientKey:
        return PatientKey.of(self.clinic_id, self.patient_id)

    def job(self, trace_fields: dict[str, Any] | None = None, message: str | None = None) -> Job:
        """The check-in's job, queued; `message` only where it starts otherwise (a rejected event)."""
        key = self.s3_key if self.s3_key is not None else upload_key(
            self.stored_patient, self.job_id, self.filename, self.created_at)
        return new_job(self.job_id, patient_id=self.stored_patient, s3_key=key, filename=self.filename,
                       clinic_id=self.clinic_id, content_type=self.content_type, created_at=self.created_at,
                       metadata=self.metadata, message=message or FIRST_MESSAGE[self.source], source=self.source,
                       trace_fields=trace_fields, options=self.options, timeline=self.timeline)


async def create_checkin(command: NewCheckin, jobs: JobStore, trace_fields: dict[str, Any] | None = None
                         ) -> tuple[Job, bool]:
    """The handler: store the check-in's job; (the job, whether this call created it: False when a job
    with its id already exists, which an idempotent retry then compares)."""
    job = command.job(trace_fields)
    return job, await jobs.create(job)
