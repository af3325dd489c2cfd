"""The vocabulary every stage shares: identifiers, check-in requests, stage names."""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timezone
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from shared.domain.errors import InputError
from shared.domain.options import CheckinOptions
from shared.domain.patients import PatientKey
from shared.domain.timeline import TimelineField

PATIENT_ID_PATTERN = r"^[A-Za-z0-9_-]{3,100}$"
# job-<32 hex digits> (128 bits); job-<12 hex digits> is how ids were made before issue 19 and stays valid.
JOB_ID_PATTERN = re.compile(r"^job-(?:[0-9a-f]{32}|[0-9a-f]{12})$")
_JOB_ID_HEX_DIGITS = 32
RESERVED_METADATA_KEY = "pipeline"  # job metadata key the stages keep their state under
CLINIC_METADATA_KEY = "clinic_id"  # job metadata key of the clinic the job belongs to (set by SchizoDot)

# What a check-in may declare itself to be, and which kind of recording that is.
ACCEPTED_CONTENT_TYPES: dict[str, str] = {
    "video/mp4": "video",
    "video/quicktime": "video",
    "video/x-msvideo": "video",
    "video/mpeg": "video",
    "video/webm": "video",
    "audio/wav": "audio",
    "audio/x-wav": "audio",
    "audio/mpeg": "audio",
    "audio/mp4": "audio",
    "audio/x-m4a": "audio",
    "audio/webm": "audio",
}


def accepted_content_type(content_type: str) -> str:
    """`content_type` without its parameters (codecs= ...), lower case; InputError unless accepted."""
    base = (content_type or "").split(";")[0].strip().lower()
    if base not in ACCEPTED_CONTENT_TYPES:
        accepted = ", ".join(ACCEPTED_CONTENT_TYPES)
        shown = content_type if content_type else "(none)"
        raise InputError(f"unsupported content type '{shown}': send one of {accepted}")
    return base


def check_content_type(content_type: str) -> None:
    """Raise InputError unless `content_type` (parameters such as codecs= allowed) is accepted."""
    accepted_content_type(content_type)


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_job_id() -> str:
    return f"job-{secrets.token_hex(_JOB_ID_HEX_DIGITS // 2)}"


def job_id_for_event(source: str, event_id: str, clinic_id: str | None = None) -> str:
    """The same upstream event always names the same job, so redelivery creates nothing new;
    two clinics' EHRs that happen to use the same source and id never share a job.

    128 bits of SHA-256: the fields are the sender's choice, and with 48 bits a sender could
    search for an event naming another clinic's job. Whoever takes over an existing job still
    checks that it is the same clinic's and patient's (`same_checkin`)."""
    scope = f"{clinic_id}\n" if clinic_id else ""
    return "job-" + hashlib.sha256(f"{scope}{source}\n{event_id}".encode()).hexdigest()[:_JOB_ID_HEX_DIGITS]


def _safe_filename(value: str) -> str:
    if "/" in value or "\\" in value or ".." in value:
        raise ValueError("the filename must be a plain name without '/', '\\' or '..'")
    if any(ord(ch) < 32 for ch in value) or not value.strip(" ."):
        raise ValueError("the filename contains control characters or no name")
    return value


def _accepted_content_type(value: str) -> str:
    try:
        return accepted_content_type(value)
    except InputError as error:
        raise ValueError(str(error)) from error


def _no_reserved_key(value: dict[str, Any]) -> dict[str, Any]:
    for reserved in (RESERVED_METADATA_KEY, CLINIC_METADATA_KEY):
        if reserved in value:
            raise ValueError(f"metadata key '{reserved}' is reserved")
    return value


PatientId = Annotated[str, StringConstraints(pattern=PATIENT_ID_PATTERN)]
Filename = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(_safe_filename)]
ContentType = Annotated[str, AfterValidator(_accepted_content_type)]
Metadata = Annotated[dict[str, Any], AfterValidator(_no_reserved_key)]


class CheckinRequest(BaseModel):
    """What a clinic app or an EHR asks for: analyse this patient's check-in."""

    model_config = ConfigDict(extra="forbid")

    patient_id: PatientId
    filename: Filename
    content_type: ContentType
    metadata: Metadata = Field(default_factory=dict)
    options: CheckinOptions = Field(default_factory=CheckinOptions, description="analyses and thresholds "
                                    "for this check-in (shared.domain.options); none: the deployment's defaults")
    timeline: TimelineField | None = Field(None, description="when each prompt and dosing step was shown, in ms "
                                           "from the start of the recording (shared.domain.timeline); none: no timeline")


def upload_key(patient_key: PatientKey, job_id: str, filename: str, created_at: str) -> str:
    """Where a check-in's media is uploaded: under the stored patient key (erasure lists this prefix)."""
    stamp = created_at[:19].replace("-", "").replace(":", "") + "Z"
    return f"uploads/{PatientKey.parse(patient_key)}/{job_id}/{stamp}_{filename}"


def job_id_from_upload_key(key: str) -> str | None:
    parts = key.split("/")
    if len(parts) == 4 and parts[0] == "uploads" and JOB_ID_PATTERN.match(parts[2]):
        return parts[2]
    return None


def artifacts_prefix(job_id: str) -> str:
    """The folder of every artifact of a job: what erasing the job removes, and where a stored
    artifact key must point for the console to serve it."""
    return f"artifacts/{job_id}/"


def artifact_key(job_id: str, name: str, suffix: str = ".json") -> str:
    """Where a job's artifact lives: its stages' JSON documents, evidence frames, the review clip."""
    return f"{artifacts_prefix(job_id)}{name}{suffix}"
