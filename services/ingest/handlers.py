"""Ingest: accept a check-in, check its media, create/advance the job, fan out.

Two ways in, one queue: S3 `ObjectCreated` notifications for uploads made
through the API's presigned URL, and `checkin.submitted` CloudEvents from an
upstream EHR pointing at media already in S3.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote_plus

import structlog
from opentelemetry import trace
from pydantic import ValidationError

from services.ingest.settings import IngestSettings
from shared import media
from shared.domain import (
    CheckinRequest,
    job_id_for_event,
    job_id_from_upload_key,
    utc_now,
)
from shared.errors import InputError, MalformedMessage
from shared.events import (
    ANALYSIS_REQUESTED,
    CHECKIN_SUBMITTED,
    AnalysisRequested,
    CheckinSubmitted,
    decode_event,
    describe_validation_error,
    event_data,
)
from shared.jobs import QUEUED, ClaimOutcome, JobsRepository, StageRun, pipeline_state, plan_weights
from shared.messaging import Delivery, Publisher
from shared.storage import MediaUnavailable, Storage
from shared.tracing import job_trace_fields
from shared.worker import run_blocking

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.ingest")

_EXTENSION_TYPES = {
    ".mp4": "video/mp4", ".mov": "video/quicktime", ".avi": "video/x-msvideo", ".mpeg": "video/mpeg",
    ".mpg": "video/mpeg", ".webm": "video/webm", ".wav": "audio/wav", ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
}


@dataclass
class IngestDeps:
    settings: IngestSettings
    jobs: JobsRepository
    storage: Storage
    publisher: Publisher


def new_job_item(
    job_id: str, request: CheckinRequest, s3_key: str, created_at: str, message: str, source: str
) -> dict[str, Any]:
    """A SchizodotJobs item as the schema describes it, status `queued`."""
    return {
        "job_id": job_id,
        "patient_id": request.patient_id,
        "status": QUEUED,
        "s3_key": s3_key,
        "filename": request.filename,
        "content_type": request.content_type,
        "created_at": created_at,
        "updated_at": created_at,
        "progress": 0,
        "message": message,
        # The trace id for people, the trace context for the stage that continues after the upload.
        "metadata": {**request.metadata, "pipeline": {"source": source, "stages": {}, **job_trace_fields()}},
    }


async def handle_ingest_message(delivery: Delivery, deps: IngestDeps) -> None:
    try:
        body = json.loads(delivery.body)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedMessage(f"the message body is not JSON: {error}") from error
    if isinstance(body, dict) and body.get("Event") == "s3:TestEvent":
        return  # S3 sends one when notifications are configured
    if isinstance(body, dict) and isinstance(body.get("Records"), list) and "specversion" not in body:
        for record in body["Records"]:
            await _handle_upload(record, delivery, deps)
        return
    await _handle_checkin_event(delivery, deps)


async def _handle_upload(record: dict, delivery: Delivery, deps: IngestDeps) -> None:
    try:
        bucket = record["s3"]["bucket"]["name"]
        key = unquote_plus(record["s3"]["object"]["key"])
    except (KeyError, TypeError) as error:
        raise MalformedMessage(f"not an S3 event record: missing {error}") from error
    job_id = job_id_from_upload_key(key)
    if job_id is None:
        raise MalformedMessage(f"upload key '{key}' was not issued by the analyze API")
    delivery.job_id = job_id
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        await start_ingest(job_id, bucket, key, delivery, deps)


async def _handle_checkin_event(delivery: Delivery, deps: IngestDeps) -> None:
    event = decode_event(delivery.body)
    job_id = job_id_for_event(event.get_source(), event.get_id())
    delivery.job_id = job_id
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        try:
            submitted = event_data(event, CheckinSubmitted, CHECKIN_SUBMITTED)
            key = submitted.s3_key
            filename = submitted.filename or PurePosixPath(key).name
            content_type = submitted.content_type or _EXTENSION_TYPES.get(PurePosixPath(key).suffix.lower(), "")
            if not content_type:
                raise MalformedMessage(
                    f"invalid event data: content_type is missing and '{PurePosixPath(key).suffix}' "
                    "does not say what the media is"
                )
            request = CheckinRequest(
                patient_id=submitted.patient_id, filename=filename, content_type=content_type,
                metadata=submitted.metadata,
            )
        except ValidationError as error:
            await _record_rejected_event(event, job_id, describe_validation_error(error), deps)
            raise MalformedMessage(describe_validation_error(error)) from error
        except MalformedMessage as error:
            await _record_rejected_event(event, job_id, str(error), deps)
            raise
        created_at = utc_now()
        created = await deps.jobs.create(
            new_job_item(job_id, request, key, created_at, "Check-in received from upstream system", "event")
        )
        log.info("check-in event accepted", new_job=created, event_id=event.get_id())
        await start_ingest(job_id, submitted.bucket or deps.settings.bucket, key, delivery, deps)


async def _record_rejected_event(event: Any, job_id: str, reason: str, deps: IngestDeps) -> None:
    """An event that names a valid patient leaves a failed job the EHR can see."""
    data = event.get_data()
    patient_id = data.get("patient_id") if isinstance(data, dict) else None
    try:
        CheckinRequest.model_validate(
            {"patient_id": patient_id, "filename": "x.mp4", "content_type": "video/mp4"}
        )
    except ValidationError:
        return
    now = utc_now()
    item = {
        "job_id": job_id, "patient_id": patient_id, "status": "queued", "s3_key": str(data.get("s3_key", "")),
        "filename": str(data.get("filename") or ""), "content_type": str(data.get("content_type") or ""),
        "created_at": now, "updated_at": now, "progress": 0, "message": "Check-in event rejected",
        "metadata": {"pipeline": {"source": "event", "stages": {}, **job_trace_fields()}},
    }
    await deps.jobs.create(item)  # exists already on redelivery; fail() is a no-op then
    await deps.jobs.fail(job_id, f"the check-in event was rejected: {reason}", "ingest")


async def start_ingest(job_id: str, bucket: str, key: str, delivery: Delivery, deps: IngestDeps) -> None:
    run = await deps.jobs.claim_stage(job_id, "ingest", delivery.message_id, "Checking the uploaded media")
    if run.outcome is ClaimOutcome.ALREADY_DONE:
        await _fan_out(run, deps)  # an earlier delivery may have died before announcing it
        return
    if run.outcome is not ClaimOutcome.CLAIMED:
        log.info("nothing to ingest", outcome=run.outcome.value)
        return
    started = time.monotonic()
    with tempfile.TemporaryDirectory(dir=deps.settings.work_dir, prefix="ingest-") as workdir:
        path = Path(workdir) / "media"
        try:
            size = await deps.storage.download(key, path, bucket=bucket)
        except MediaUnavailable as error:
            raise InputError(str(error)) from error
        if size > deps.settings.max_upload_bytes:
            raise InputError(
                f"the file is {size / 1024**2:.0f} MB; the limit is {deps.settings.max_upload_bytes / 1024**2:.0f} MB"
            )
        with tracer.start_as_current_span("probe media") as span:
            span.set_attribute("schizodot.job_id", job_id)
            info = await run_blocking(
                None,
                lambda: media.probe(
                    path,
                    min_duration_seconds=deps.settings.min_duration_seconds,
                    max_duration_seconds=deps.settings.max_duration_seconds,
                ),
            )
    modalities = [m for m, present in (("audio", info.has_audio), ("vision", info.has_video)) if present]
    skipped = {}
    if not info.has_audio:
        skipped["audio"] = "the recording has no sound track"
    if not info.has_video:
        skipped["vision"] = "the recording has no video track"
    described = ", ".join(f"{m} skipped: {why}" for m, why in skipped.items())
    await deps.jobs.finish_stage(
        run,
        f"Media checked ({info.duration_seconds:.1f} s); analysing {' and '.join(modalities)}"
        + (f" ({described})" if described else ""),
        outputs={"size_bytes": size, "compute_seconds": round(time.monotonic() - started, 3)},
        pipeline_updates={
            "media": info.to_dict(),
            "bucket": bucket,
            "expected": modalities,
            "skipped": skipped,
            "weights": plan_weights(modalities),
        },
    )
    refreshed = await deps.jobs.get(job_id)
    run.job = refreshed or run.job
    await _fan_out(run, deps)


async def _fan_out(run: StageRun, deps: IngestDeps) -> None:
    state = pipeline_state(run.job)
    for modality in state.get("expected", []):
        await deps.publisher.publish(
            modality,
            ANALYSIS_REQUESTED,
            run.job_id,
            AnalysisRequested(job_id=run.job_id, bucket=state["bucket"], s3_key=run.job["s3_key"], media=state["media"]),
        )
    log.info("analysis requested", modalities=state.get("expected", []))
