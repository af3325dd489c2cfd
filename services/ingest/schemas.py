"""The request and response bodies of the check-in HTTP API (services/ingest/api.py)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.checkin import Metadata, PatientId
from shared.domain.job import JobStatus
from shared.domain.options import CheckinOptions
from shared.domain.timeline import TimelineField


class AnalyzeResponse(BaseModel):
    job_id: str
    status: str
    s3_key: str
    upload_url: str
    upload_method: str = Field("POST", description="PUT: send the file as the body, with its Content-Type and "
                               "this API's credential; POST: a multipart/form-data form, the fields then the file")
    upload_fields: dict[str, str] = Field(description="form fields to send before the file (POST only)")
    max_bytes: int
    expires_in: int
    expires_at: str
    trace_id: str | None = None  # find the job's trace in Jaeger by it


class PatientLinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: PatientId
    metadata: Metadata = Field(default_factory=dict)
    options: CheckinOptions = Field(default_factory=CheckinOptions,
                                    description="analyses and thresholds for the check-in (shared.domain.options)")
    expires_in: int | None = Field(None, ge=60, description="seconds; at most INGEST_PATIENT_LINK_MAX_SECONDS")


class PatientLinkResponse(BaseModel):
    job_id: str
    token: str = Field(description="shown once; the link's only copy")
    url: str = Field(description="the patient page, with the token in the fragment (never sent to a server)")
    expires_at: str


class LinkUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(min_length=1, max_length=200)
    timeline: TimelineField | None = Field(None, description="when each prompt and dosing step was shown "
                                           "(shared.domain.timeline)")


class RecordingReceived(BaseModel):
    job_id: str
    status: str = "received"
    bytes: int


class EventAccepted(BaseModel):
    job_id: str
    message_id: str


class CheckinStatus(JobStatus):
    """A job as ingest shows it: its status, and whether the check-in still waits for its recording."""

    awaiting_recording: bool = Field(description="an upload of the recording is still accepted (false once S3 "
                                                 "holds it or the job has moved on)")
