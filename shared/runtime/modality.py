"""What every modality stage (audio, vision) does with an analysis request: fetch
the media, run the stage's analyser off the event loop with progress, and hand
back its findings as the stage's artifact, telling fusion.

The analysers are plain functions of a file path, so the same code runs in a
benchmark or a notebook; each stage's `handlers.py` says which analyser it runs.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from opentelemetry import trace

from shared.aws.storage import ObjectStore
from shared.domain.checkin import utc_now
from shared.domain.findings import AudioFindings, VisionFindings
from shared.domain.options import CheckinOptions
from shared.domain.timeline import CheckinTimeline
from shared.runtime.blocking import run_blocking
from shared.runtime.events import AnalysisRequested, ModalityAnalysed
from shared.runtime.runner import Emit, Stage, StageOutcome, Work, parse_stage_event

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.modality")

Progress = Callable[[float, str], None]
FINDINGS: dict[str, type[AudioFindings] | type[VisionFindings]] = {"audio": AudioFindings, "vision": VisionFindings}


@dataclass(frozen=True)
class Checkin:
    """What an analyser may need of the check-in besides its media: its job id, options,
    timeline (None where the check-in carries none) and clinic (its own models and settings, e.g.
    its patients' languages)."""

    job_id: str
    options: CheckinOptions = CheckinOptions()
    timeline: CheckinTimeline | None = None
    clinic_id: str | None = None


# (media file, progress callback, the check-in) -> the modality's findings
Analyse = Callable[[Path, Progress, Checkin], dict[str, Any]]


@dataclass
class ModalityDeps:
    storage: ObjectStore
    analyse: Analyse
    executor: Executor | None  # where the analyser runs (one thread: its models are not shared)


def modality_stage(modality: str) -> Stage[AnalysisRequested, ModalityDeps]:
    return Stage(name=modality, parse=parse_stage_event(AnalysisRequested), handle=analyse_media,
                 claim_message=f"{modality.capitalize()}: starting")


async def analyse_media(work: Work[AnalysisRequested], deps: ModalityDeps) -> StageOutcome:
    modality, request = work.stage, work.event
    title = modality.capitalize()
    with tempfile.TemporaryDirectory(prefix=f"{modality}-") as workdir:
        path = Path(workdir) / "media"
        # where the media is comes from the job (the message carries its id only); MediaUnavailable: InputError
        await deps.storage.download(work.job.s3_key, path, bucket=work.job.pipeline.bucket)
        progress = ProgressBridge(work.progress, title)
        started = time.monotonic()
        with tracer.start_as_current_span(f"{modality} analysis") as span:
            span.set_attribute("schizodot.job_id", request.job_id)
            span.set_attribute("schizodot.stage", modality)
            checkin = Checkin(request.job_id, work.job.pipeline.options,
                              CheckinTimeline.of(work.job.pipeline.timeline), work.job.clinic_id)
            result = await run_blocking(deps.executor, deps.analyse, path, progress, checkin)
            _describe_analysis(span, modality, result)
        compute_seconds = round(time.monotonic() - started, 3)
    # written from the model: an analyser whose output breaks the contract fails here, not in fusion
    findings = FINDINGS[modality].model_validate({"job_id": request.job_id, "modality": modality,
                                                  "analysed_at": utc_now(), "compute_seconds": compute_seconds,
                                                  **result})
    log.info("modality analysed", modality=modality, compute_seconds=compute_seconds)
    return StageOutcome(
        message=f"{title} analysis done",
        artifact=findings.stored(),
        outputs={"compute_seconds": compute_seconds},
        emit=(Emit("fusion", ModalityAnalysed(job_id=request.job_id, modality=modality)),),
    )


def _describe_analysis(span: trace.Span, modality: str, result: dict[str, Any]) -> None:
    """What the analysis ran and on how much media; never its findings or content."""
    for name, model in (result.get("models") or {}).items():
        span.set_attribute(f"schizodot.model.{name}", str(model))  # name, version and file digest
    if isinstance(result.get("frames_analysed"), int):
        span.set_attribute("schizodot.frames_analysed", result["frames_analysed"])
    if modality == "audio" and isinstance(result.get("duration_seconds"), (int, float)):
        span.set_attribute("schizodot.audio_seconds", float(result["duration_seconds"]))


class ProgressBridge:
    """A plain callback for analysers running in a thread, reporting stage
    progress on the event loop without blocking the analyser, at most every
    `min_interval` seconds."""

    def __init__(self, report: Callable[[float, str], Awaitable[None]], prefix: str,
                 min_interval: float = 1.0) -> None:
        self._report = report
        self._prefix = prefix
        self._interval = min_interval
        self._loop = asyncio.get_running_loop()
        self._last = 0.0
        self._pending: Any = None

    def __call__(self, fraction: float, message: str) -> None:
        now = time.monotonic()
        if now - self._last < self._interval or (self._pending and not self._pending.done()):
            return
        self._last = now
        self._pending = asyncio.run_coroutine_threadsafe(
            self._report(fraction, f"{self._prefix}: {message}"), self._loop
        )
