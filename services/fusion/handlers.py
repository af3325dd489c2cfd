"""Fusion: once every expected modality is analysed, combine them exactly once."""

from __future__ import annotations

import time
from dataclasses import dataclass

import structlog
from opentelemetry import trace

from services.fusion.baseline import compare, findings_of
from services.fusion.llm import SummaryWriter, summarise
from services.fusion.rules import clinical_summary, fuse
from services.fusion.settings import FusionSettings
from shared.history import PatientHistory
from shared.domain import artifact_key, utc_now
from shared.events import FUSION_COMPLETED, MODALITY_ANALYSED, FusionCompleted, ModalityAnalysed, decode_event, event_data
from shared.jobs import ACTIVE_STATUSES, ClaimOutcome, pipeline_state
from shared.messaging import Delivery
from shared.modality import load_modality_results
from shared.worker import StageContext

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.fusion")


@dataclass
class FusionDeps:
    history: PatientHistory  # read only: results is the one writer of SchizodotUsers
    summary_writer: SummaryWriter | None = None  # the optional LLM summary


async def handle_modality_analysed(delivery: Delivery, context: StageContext, deps: FusionDeps) -> None:
    settings: FusionSettings = context.settings  # type: ignore[assignment]
    notice = event_data(decode_event(delivery.body), ModalityAnalysed, MODALITY_ANALYSED)
    job_id = notice.job_id
    delivery.job_id = job_id
    with structlog.contextvars.bound_contextvars(job_id=job_id):
        job = await context.jobs.get(job_id)
        if job is None or job["status"] not in ACTIVE_STATUSES:
            log.info("job not active; notice ignored", modality=notice.modality)
            return
        state = pipeline_state(job)
        expected = state.get("expected", [])
        stages = state.get("stages", {})
        waiting = [m for m in expected if stages.get(m, {}).get("state") != "done"]
        if waiting:
            # The last modality to finish sends its own notice; that one fuses.
            log.info("waiting for other modalities", arrived=notice.modality, waiting=waiting)
            return
        run = await context.jobs.claim_stage(job_id, "fusion", delivery.message_id, "Combining audio and video findings")
        key = artifact_key(job_id, "fusion")
        if run.outcome is ClaimOutcome.ALREADY_DONE:
            await _announce(context, job_id, key)
            return
        if run.outcome is not ClaimOutcome.CLAIMED:
            log.info("fusion not run", outcome=run.outcome.value)
            return
        started = time.monotonic()
        documents = await load_modality_results(context.storage, job)
        audio, vision = documents.get("audio"), documents.get("vision")
        # This job's own item does not exist yet; a redelivery after results ran is filtered out all the same.
        history = [item for item in await deps.history.latest(run.job["patient_id"], settings.baseline_window + 1)
                   if item.get("job_id") != job_id][: settings.baseline_window]
        with tracer.start_as_current_span("fusion rules") as span:
            span.set_attribute("schizodot.job_id", job_id)
            analysed_at = utc_now()
            baseline = compare(findings_of(audio, vision), history, settings)
            fusion = fuse(audio, vision, expected, state.get("skipped", {}), settings,
                          baseline=(baseline.report, baseline.factors))
            compliance = (vision or {}).get("compliance")
            summary = clinical_summary(fusion, compliance, analysed_at)
        summary = await summarise(summary, fusion, compliance, deps.summary_writer)
        compute_seconds = round(time.monotonic() - started, 3)
        await context.storage.put_json(
            key,
            {"job_id": job_id, "analysed_at": analysed_at, "compute_seconds": compute_seconds,
             "multimodal_fusion": fusion, "clinical_summary": summary,
             **baseline.markers},  # vocal_markers and video_markers, each with its baseline block
        )
        await context.jobs.finish_stage(
            run, f"Findings combined: risk {fusion['risk_level']}",
            outputs={"artifact_key": key, "compute_seconds": compute_seconds},
        )
        await _announce(context, job_id, key)


async def _announce(context: StageContext, job_id: str, key: str) -> None:
    await context.publisher.publish("results", FUSION_COMPLETED, job_id, FusionCompleted(job_id=job_id, artifact_key=key))
