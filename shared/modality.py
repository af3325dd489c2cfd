"""The shape every modality stage (audio, vision) shares: claim the job's stage,
fetch the media, run the analyser off the event loop with progress, store the
result as a JSON artifact and tell fusion. The analysers themselves are plain
functions of a file path, so the same code runs in a benchmark or notebook."""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace

from shared.domain import artifact_key, utc_now
from shared.events import ANALYSIS_REQUESTED, MODALITY_ANALYSED, AnalysisRequested, ModalityAnalysed, decode_event, event_data
from shared.jobs import ClaimOutcome, pipeline_state
from shared.messaging import Delivery
from shared.storage import MediaUnavailable, Storage
from shared.errors import InputError
from shared.worker import ProgressBridge, StageContext, run_blocking

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.modality")

Progress = Callable[[float, str], None]
# (media file, progress callback, job id) -> the modality's findings
Analyse = Callable[[Path, Progress, str], dict[str, Any]]


async def handle_analysis_request(
    delivery: Delivery, context: StageContext, modality: str, analyse: Analyse, executor: Executor
) -> None:
    request = event_data(decode_event(delivery.body), AnalysisRequested, ANALYSIS_REQUESTED)
    delivery.job_id = request.job_id
    title = modality.capitalize()
    with structlog.contextvars.bound_contextvars(job_id=request.job_id):
        run = await context.jobs.claim_stage(request.job_id, modality, delivery.message_id, f"{title}: starting")
        key = artifact_key(request.job_id, modality)
        if run.outcome is ClaimOutcome.ALREADY_DONE:
            await _announce(context, request.job_id, modality, key)
            return
        if run.outcome is not ClaimOutcome.CLAIMED:
            log.info("stage not run", outcome=run.outcome.value)
            return
        with tempfile.TemporaryDirectory(prefix=f"{modality}-") as workdir:
            path = Path(workdir) / "media"
            try:
                await context.storage.download(request.s3_key, path, bucket=request.bucket)
            except MediaUnavailable as error:
                raise InputError(str(error)) from error
            progress = ProgressBridge(context.jobs, run, title)
            started = time.monotonic()
            with tracer.start_as_current_span(f"{modality} analysis") as span:
                span.set_attribute("schizodot.job_id", request.job_id)
                span.set_attribute("schizodot.stage", modality)
                result = await run_blocking(executor, analyse, path, progress, request.job_id)
                _describe_analysis(span, modality, result)
            compute_seconds = round(time.monotonic() - started, 3)
        document = {
            "job_id": request.job_id,
            "modality": modality,
            "analysed_at": utc_now(),
            "compute_seconds": compute_seconds,
            **result,
        }
        await context.storage.put_json(key, document)
        await context.jobs.finish_stage(
            run, f"{title} analysis done", outputs={"artifact_key": key, "compute_seconds": compute_seconds}
        )
        log.info("modality analysed", modality=modality, compute_seconds=compute_seconds)
        await _announce(context, request.job_id, modality, key)


def _describe_analysis(span: trace.Span, modality: str, result: dict[str, Any]) -> None:
    """What the analysis ran and on how much media; never its findings or content."""
    for name, model in (result.get("models") or {}).items():
        span.set_attribute(f"schizodot.model.{name}", str(model))  # name, version and file digest
    if isinstance(result.get("frames_analysed"), int):
        span.set_attribute("schizodot.frames_analysed", result["frames_analysed"])
    if modality == "audio" and isinstance(result.get("duration_seconds"), (int, float)):
        span.set_attribute("schizodot.audio_seconds", float(result["duration_seconds"]))


async def _announce(context: StageContext, job_id: str, modality: str, key: str) -> None:
    await context.publisher.publish(
        "fusion", MODALITY_ANALYSED, job_id, ModalityAnalysed(job_id=job_id, modality=modality, artifact_key=key)
    )


async def load_modality_results(storage: Storage, job: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The artifacts of the modalities this job expected, by modality (fusion and results read them)."""
    state = pipeline_state(job)
    return {
        modality: await storage.get_json(state["stages"][modality]["outputs"]["artifact_key"])
        for modality in state.get("expected", [])
    }
