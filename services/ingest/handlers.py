"""Ingest: accept a check-in, check its media, plan the analysis, fan out.

Two ways in, one queue: S3 `ObjectCreated` notifications for uploads made
through the API's presigned URL (the job exists: the API made it), and
`checkin.submitted` CloudEvents from an upstream EHR pointing at media already
in S3 (the event makes the job; the same event always names the same job). An
event that cannot be read but names a patient leaves a failed job the EHR can see.

The stage downloads the media, checks it (`shared.runtime.media.probe`: an unreadable
file fails the job with the reason in words), decides which modalities to
analyse (those the recording has, of those the check-in's options ask for) and
each stage's share of the progress bar, and asks audio and vision.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

import structlog
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, ValidationError

from services.ingest.checkins import NewCheckin
from services.ingest.settings import UploadPolicy
from shared.aws.storage import ObjectStore
from shared.domain.checkin import CheckinRequest, job_id_for_event, job_id_from_upload_key
from shared.domain.errors import InputError, MalformedMessage
from shared.domain.job import PipelinePlan, plan_weights
from shared.domain.options import NOT_REQUESTED
from shared.domain.timeline import CheckinTimeline, windows
from shared.identity.principal import is_clinic_id
from shared.runtime import media
from shared.runtime.blocking import run_blocking
from shared.runtime.events import (
    AnalysisRequested,
    CheckinSubmitted,
    decode_event,
    describe_validation_error,
    event_data,
    parse_json,
    tracing_carrier,
)
from shared.runtime.infra import EHR_MEDIA_PREFIX
from shared.runtime.runner import Emit, Inbound, RejectedEvent, Stage, StageOutcome, Work

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.ingest")

_EXTENSION_TYPES = {
    ".mp4": "video/mp4", ".mov": "video/quicktime", ".avi": "video/x-msvideo", ".mpeg": "video/mpeg",
    ".mpg": "video/mpeg", ".webm": "video/webm", ".wav": "audio/wav", ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
}


class MediaArrived(BaseModel):
    """Check the media of this job, at this S3 location (no bucket: the media bucket)."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    bucket: str | None
    s3_key: str


@dataclass
class IngestDeps:
    uploads: UploadPolicy
    storage: ObjectStore


# --- the edge: what the ingest queue carries ------------------------------------------------


def parse_ingest_message(body: str) -> list[Inbound[MediaArrived]]:
    message = parse_json(body)
    if isinstance(message, dict) and message.get("Event") == "s3:TestEvent":
        return []  # S3 sends one when notifications are configured
    if isinstance(message, dict) and isinstance(message.get("Records"), list) and "specversion" not in message:
        return [_upload(record) for record in message["Records"]]
    return [_checkin_event(message)]


def _upload(record: Any) -> Inbound[MediaArrived]:
    try:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
    except (KeyError, TypeError) as error:
        raise MalformedMessage(f"not an S3 event record: missing {error}") from error
    job_id = job_id_from_upload_key(key)
    if job_id is None:
        raise MalformedMessage(f"upload key '{key}' was not issued by the analyze API")
    # S3 notifications carry no trace context: the job's, stored by the API, goes on.
    return Inbound(job_id, MediaArrived(job_id=job_id, bucket=bucket, s3_key=key), trace_from_job=True)


def ehr_media_problem(submitted: CheckinSubmitted) -> str | None:
    """Why an EHR event may not point at its media (None when it may): an EHR's media are its
    own clinic's, under `incoming/<clinic>/` of the media bucket, never another clinic's uploads."""
    prefix = f"{EHR_MEDIA_PREFIX}{submitted.clinic_id}/"
    if submitted.bucket is not None:
        return f"bucket: EHR media must be in the media bucket under {prefix}; leave bucket out"
    if not submitted.s3_key.startswith(prefix) or ".." in submitted.s3_key.split("/"):
        return f"s3_key: must be under {prefix}"
    return None


def _checkin_event(message: Any) -> Inbound[MediaArrived]:
    event = decode_event(message)
    data = event.get_data()
    clinic = data.get("clinic_id") if isinstance(data, dict) else None
    job_id = job_id_for_event(event.get_source(), event.get_id(), clinic if is_clinic_id(clinic) else None)
    try:
        submitted = event_data(event, CheckinSubmitted)
        key = submitted.s3_key
        problem = ehr_media_problem(submitted)
        if problem:
            raise MalformedMessage(f"invalid event data: {problem}")
        filename = submitted.filename or PurePosixPath(key).name
        content_type = submitted.content_type or _EXTENSION_TYPES.get(PurePosixPath(key).suffix.lower(), "")
        if not content_type:
            raise MalformedMessage(
                f"invalid event data: content_type is missing and '{PurePosixPath(key).suffix}' "
                "does not say what the media is"
            )
        request = CheckinRequest(patient_id=submitted.patient_id, filename=filename, content_type=content_type,
                                 metadata=submitted.metadata, options=submitted.options,
                                 timeline=submitted.timeline)
    except ValidationError as error:
        raise _rejected(event, job_id, describe_validation_error(error)) from error
    except MalformedMessage as error:
        raise _rejected(event, job_id, str(error)) from error
    job = NewCheckin(job_id, submitted.clinic_id, request.patient_id, request.filename, request.content_type, "event",
                     s3_key=key, metadata=request.metadata, options=request.options, timeline=request.timeline).job()
    return Inbound(job_id, MediaArrived(job_id=job_id, bucket=None, s3_key=key), new_job=job,
                   event_id=event.get_id(), trace_carrier=tracing_carrier(event))


def _rejected(event: Any, job_id: str, reason: str) -> MalformedMessage:
    """The event is dead-lettered; when it names a valid clinic and patient, that patient's job says why."""
    data = event.get_data()
    patient_id = data.get("patient_id") if isinstance(data, dict) else None
    clinic = data.get("clinic_id") if isinstance(data, dict) else None
    try:
        CheckinRequest.model_validate({"patient_id": patient_id, "filename": "x.mp4", "content_type": "video/mp4"})
        if not is_clinic_id(clinic):
            raise ValueError("no clinic")
    except ValueError:  # pydantic's ValidationError included
        error = MalformedMessage(reason)
    else:
        job = NewCheckin(job_id, clinic, patient_id, str(data.get("filename") or ""),
                         str(data.get("content_type") or ""), "event", s3_key=str(data.get("s3_key", ""))
                         ).job(message="Check-in event rejected")
        error = RejectedEvent(reason, job)
    error.trace_carrier = tracing_carrier(event)
    return error


# --- the stage -------------------------------------------------------------------------------


async def check_media(work: Work[MediaArrived], deps: IngestDeps) -> StageOutcome:
    arrived, limits = work.event, deps.uploads
    bucket = arrived.bucket or deps.storage.bucket
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=limits.work_dir, prefix="ingest-") as workdir:
        path = Path(workdir) / "media"
        size = await deps.storage.download(arrived.s3_key, path, bucket=bucket)  # MediaUnavailable: InputError
        if size > limits.max_upload_bytes:
            raise InputError(f"the file is {size / 1024**2:.0f} MB; the limit is {limits.max_upload_bytes / 1024**2:.0f} MB")
        with tracer.start_as_current_span("probe media") as span:
            span.set_attribute("schizodot.job_id", arrived.job_id)
            info = await run_blocking(None, lambda: media.probe(
                path, min_duration_seconds=limits.min_duration_seconds, max_duration_seconds=limits.max_duration_seconds,
            ))
    options = work.job.pipeline.options
    skipped = {}
    for modality, present, missing in (("audio", info.has_audio, "the recording has no sound track"),
                                       ("vision", info.has_video, "the recording has no video track")):
        if not options.wants(modality):
            skipped[modality] = NOT_REQUESTED  # the check-in's options (shared.domain.options)
        elif not present:
            skipped[modality] = missing
    modalities = [m for m in ("audio", "vision") if m not in skipped]
    if not modalities:
        raise InputError("the check-in asked only for analyses of a track the recording does not have: "
                         + "; ".join(f"{m}: {why}" for m, why in skipped.items()))
    described = ", ".join(f"{m} skipped: {why}" for m, why in skipped.items())
    timeline_flags = _timeline_flags(work.job.pipeline.timeline, info.duration_seconds)
    log.info("analysis requested", modalities=modalities)
    return StageOutcome(
        message=f"Media checked ({info.duration_seconds:.1f} s); analysing {' and '.join(modalities)}"
        + (f" ({described})" if described else ""),
        outputs={"size_bytes": size, "compute_seconds": round(time.monotonic() - started, 3)},
        plan=PipelinePlan(media=info.to_dict(), bucket=bucket, expected=modalities, skipped=skipped,
                          weights=plan_weights(modalities),
                          **({"timeline_flags": timeline_flags} if timeline_flags is not None else {})),
        emit=tuple(Emit(m, AnalysisRequested(job_id=arrived.job_id)) for m in modalities),
    )


def _timeline_flags(stored: list[dict] | None, duration_seconds: float) -> list[str] | None:
    """Steps of the check-in's timeline shown after the recording ended or running past its end, in
    words (None without a timeline: nothing to record)."""
    timeline = CheckinTimeline.of(stored)
    return list(windows(timeline, duration_seconds).flags) if timeline is not None else None


INGEST = Stage(name="ingest", parse=parse_ingest_message, handle=check_media,
               claim_message="Checking the uploaded media")
