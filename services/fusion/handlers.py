"""Fusion: once every expected modality is analysed, combine them exactly once.

The last modality to finish sends the notice that fuses; an earlier one is
acknowledged without running the stage. Fusion reads the modalities' artifacts
(where the job record says they are) and the patient's earlier results
(`shared.aws.history`, read only), applies the rules (rules.py, baseline.py) with the
thresholds the check-in's options set (else `FUSION_*`), writes
the clinical summary (an LLM only as an opt-in, llm.py) and stores one findings
document, `artifacts/<job>/fusion.json`: the seed-shaped `results` map of the
SchizodotUsers item (findings.py), which results saves as it is.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import structlog
from opentelemetry import trace

from services.fusion.baseline import HISTORY_ATTRIBUTES, compare, earlier_results, findings_of
from services.fusion.findings import build_results
from services.fusion.llm import SummaryWriter, summarise
from services.fusion.rules import clinical_summary, fuse
from services.fusion.settings import FusionSettings
from shared.aws.history import HistoryReader
from shared.aws.storage import ObjectStore, read_document
from shared.domain.checkin import utc_now
from shared.domain.findings import AudioFindings, DocumentT, FusionDocument, Results, VisionFindings
from shared.domain.job import Job
from shared.domain.options import FusionThresholds
from shared.runtime.events import FusionCompleted, ModalityAnalysed
from shared.runtime.runner import Emit, Stage, StageOutcome, Work, parse_stage_event

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.fusion")


@dataclass
class FusionDeps:
    settings: FusionSettings
    storage: ObjectStore
    history: HistoryReader  # read only: results is the one writer of SchizodotUsers
    summary_writer: SummaryWriter | None = None  # the optional LLM summary


def all_modalities_analysed(notice: ModalityAnalysed, job: Job) -> bool:
    waiting = [m for m in job.pipeline.expected if not job.pipeline.done(m)]
    if waiting:  # the last modality to finish sends its own notice; that one fuses
        log.info("waiting for other modalities", arrived=notice.modality, waiting=waiting)
    return not waiting


def options_report(job: Job, settings: FusionSettings) -> dict[str, Any]:
    """What the check-in asked for and what applied, for the result (`results.options`)."""
    options = job.pipeline.options
    return {"analyses_requested": list(options.analyses) if options.analyses is not None else None,
            "modalities_analysed": list(job.pipeline.expected),
            "thresholds": {name: getattr(settings, name) for name in FusionThresholds.model_fields},
            "thresholds_set_on_checkin": options.thresholds.given()}


async def fuse_findings(work: Work[ModalityAnalysed], deps: FusionDeps) -> StageOutcome:
    job = work.job
    # The clinic's thresholds set on this check-in replace the deployment's (shared.domain.options).
    settings = deps.settings.model_copy(update=job.pipeline.options.thresholds.given())
    started = time.monotonic()
    # Independent reads, sent together: the two artifacts and the parts of the patient's earlier results
    # the baseline uses (HISTORY_ATTRIBUTES). This job's own item does not exist yet; a redelivery after
    # results ran is left out all the same (one more is read for it).
    audio, vision, stored = await asyncio.gather(
        load_findings(deps.storage, job, "audio", AudioFindings),
        load_findings(deps.storage, job, "vision", VisionFindings),
        deps.history.latest_projected(job.patient_id, HISTORY_ATTRIBUTES, settings.baseline_window + 1))
    history = earlier_results(stored, job.job_id, settings.baseline_window)
    with tracer.start_as_current_span("fusion rules") as span:
        span.set_attribute("schizodot.job_id", job.job_id)
        analysed_at = utc_now()
        baseline = compare(findings_of(audio, vision), history, settings)
        fusion = fuse(audio, vision, job.pipeline.expected, job.pipeline.skipped, settings,
                      baseline=(baseline.report, baseline.factors))
        compliance = vision.compliance.stored() if vision and vision.compliance else None
        summary = clinical_summary(fusion, compliance, analysed_at)
    summary = await summarise(summary, fusion, compliance, deps.summary_writer)
    # vocal_markers, video_markers and the answers' markers come back from `compare` each with its baseline block
    results = build_results({"multimodal_fusion": fusion, "clinical_summary": summary, **baseline.markers,
                             "answers": baseline.answers}, audio, vision, job.pipeline.skipped)
    results["options"] = options_report(job, settings)
    compute_seconds = round(time.monotonic() - started, 3)
    document = FusionDocument(job_id=job.job_id, analysed_at=analysed_at, compute_seconds=compute_seconds,
                              results=Results.model_validate(results))
    return StageOutcome(
        message=f"Findings combined: risk {document.results.multimodal_fusion.risk_level}",
        artifact=document.stored(),
        outputs={"compute_seconds": compute_seconds},
        emit=(Emit("results", FusionCompleted(job_id=job.job_id)),),
    )


async def load_findings(storage: ObjectStore, job: Job, modality: str, model: type[DocumentT]) -> DocumentT | None:
    """One modality's artifact as `model`. One that is not JSON or does not parse fails the job at once
    with what is wrong (an InputError: retrying reads the same bytes); the artifact stays in S3 as it was."""
    if modality not in job.pipeline.expected:
        return None
    key = job.pipeline.artifact_key(modality)
    return await read_document(storage, key, model, f"the {modality} stage's findings ({key})")


FUSION = Stage(name="fusion", parse=parse_stage_event(ModalityAnalysed), handle=fuse_findings,
               claim_message="Combining audio and video findings", ready=all_modalities_analysed)
