"""Results: the one writer of SchizodotUsers, and the stage that completes jobs.

It reads fusion's findings document (where the job record says it is), saves
the patient's SchizodotUsers item once whatever the deliveries, sends the FHIR
bundle to the EHR when that is configured, raises the clinic's alerts on the new
result (services/results/alerts: stored once by id, queued for delivery), each
before completing (a crash in between does them again rather than losing them),
and completes the job. The sweeper fails jobs that stopped making progress.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from opentelemetry import trace

from services.results.alerts import AlertService, earlier_of, read_alert_history
from services.results.ehr.fhir import FHIR_VERSION, build_bundle
from services.results.ehr.publisher import EhrPublisher, encode_results_event
from services.results.settings import ResultsSettings
from services.results.stage.user_item import build_user_item, job_summary
from services.results.stage.writer import ResultsStore
from shared.aws.history import HistoryReader
from shared.aws.jobs import JobStore
from shared.aws.storage import ObjectStore, read_document
from shared.domain.findings import FusionDocument, PartialResultItem, ResultItem
from shared.domain.job import QUEUED, Job
from shared.domain.patients import PatientKey
from shared.identity.audit import AuditTrail
from shared.runtime.events import FusionCompleted
from shared.runtime.runner import Stage, StageOutcome, Work, parse_stage_event

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.results")


@dataclass
class ResultsDeps:
    settings: ResultsSettings
    storage: ObjectStore  # fusion's findings document; the media bucket, for the FHIR Media URL
    writer: ResultsStore
    ehr: EhrPublisher | None = None
    audit: AuditTrail | None = None  # results sent to the EHR are PHI leaving: audited (required when ehr is on)
    alerts: AlertService | None = None  # the clinic's alert rules on each new result
    history: HistoryReader | None = None  # the patient's earlier results, for the alert rules


async def load_fusion_document(storage: ObjectStore, job: Job) -> FusionDocument:
    """Fusion's findings, parsed once here; one that is not JSON or does not parse fails the job with what
    is wrong (an InputError: retrying reads the same bytes), and the document stays in S3 as it was."""
    key = job.pipeline.artifact_key("fusion")
    return await read_document(storage, key, FusionDocument, f"fusion's findings ({key})")


async def save_results(work: Work[FusionCompleted], deps: ResultsDeps) -> StageOutcome:
    job = work.job
    # The alert rules' history waits for neither fusion's document nor the save, so it is read beside both (this
    # job's own item, saved already by an earlier try, is left out by its id); a failure to read it is the
    # alerts' failure (below), not the save's.
    found = asyncio.ensure_future(read_alert_history(deps.history, PatientKey.parse(job.patient_id),
                                                     deps.settings.alert_history)) \
        if deps.alerts is not None and deps.history is not None and job.clinic_id else None
    try:
        result = build_user_item(job, await load_fusion_document(deps.storage, job))
        return await _save_and_announce(work, deps, result, result.stored(), found)  # stored: written from the model
    finally:
        if found is not None and not found.done():
            found.cancel()  # the document, the save or the EHR push failed first: the message is retried
        elif found is not None and not found.cancelled():
            found.exception()  # read: a failure the save's failure came before is not reported twice


async def _save_and_announce(work: Work[FusionCompleted], deps: ResultsDeps, result: ResultItem, item: dict,
                             found: asyncio.Future[list[dict[str, Any]]] | None) -> StageOutcome:
    job = work.job
    with tracer.start_as_current_span("save results") as span:
        span.set_attribute("schizodot.job_id", job.job_id)
        saved = await deps.writer.save(item)
    message = "Analysis completed successfully"
    if deps.ehr is not None and deps.ehr.enabled:
        bundle = build_bundle(result, job, deps.storage.bucket, deps.settings.fhir_patient_identifier_system)
        try:
            if deps.audit is None:
                raise RuntimeError("no audit trail: results are not sent to the EHR unaudited")
            await deps.audit.record_system("ehr.results_sent", clinic_id=job.clinic_id,
                                           stored_patient_key=job.patient_id, job_id=job.job_id)
            with tracer.start_as_current_span("send results to the EHR"):
                await deps.ehr.publish(job.job_id, encode_results_event(job.job_id, bundle, deps.ehr.source, FHIR_VERSION))
        except Exception as error:
            if not work.final_attempt:
                raise  # retried with back-off like any transient failure
            # The analysis is saved and readable; only the push failed, so the job still completes.
            reason = f"{type(error).__name__}: {error}"[:300]
            log.error("results could not be sent to the EHR; job completed without it", error=reason)
            message = f"Analysis completed; sending it to the EHR failed: {reason}"
    if found is not None and job.clinic_id:
        try:
            earlier = earlier_of(await found, result, deps.settings.alert_history)
            await raise_alerts(job.clinic_id, result, earlier, deps)
        except Exception as error:
            if not work.final_attempt:
                raise  # retried: alerts are stored once by id, so a repeat raises nothing twice
            reason = f"{type(error).__name__}: {error}"[:300]
            log.error("alert rules could not run; job completed without them", error=reason)
            message = f"{message}; raising alerts failed: {reason}"
    log.info("results saved; job completed", saved=saved, risk_level=result.results.multimodal_fusion.risk_level)
    return StageOutcome(message=message, job_results=job_summary(result))


async def raise_alerts(clinic_id: str, item: ResultItem, earlier: list[PartialResultItem], deps: ResultsDeps
                       ) -> None:
    """The clinic's alert rules on the stored `item`, with the patient's earlier results (`earlier_of`)."""
    assert deps.alerts is not None
    with tracer.start_as_current_span("raise alerts") as span:
        span.set_attribute("schizodot.job_id", item.job_id)
        raised = await deps.alerts.on_result(clinic_id, item, earlier)
        span.set_attribute("schizodot.alerts_raised", len(raised))
    if raised:
        log.info("alerts raised", rules=[a.rule for a in raised])


RESULTS = Stage(name="results", parse=parse_stage_event(FusionCompleted), handle=save_results,
                claim_message="Saving the results")


async def sweep_stuck_jobs(jobs: JobStore, settings: ResultsSettings, now: datetime | None = None) -> list[str]:
    """Fail active jobs that made no progress within `stuck_after_seconds`."""
    now = now or datetime.now(timezone.utc)
    cutoff = (now - timedelta(seconds=settings.stuck_after_seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    failed = []
    for job in await jobs.find_stuck(cutoff):
        minutes = settings.stuck_after_seconds / 60
        if job.status == QUEUED:
            reason = f"the upload did not arrive within {minutes:.0f} min; submit the check-in again"
        else:
            reason = (
                f"the analysis made no progress for {minutes:.0f} min (last step: {job.message or 'unknown'}); "
                "it was stopped, submit the check-in again"
            )
        if await jobs.fail(job.job_id, reason, "sweeper", reason="stuck"):
            failed.append(job.job_id)
            log.warning("stuck job failed", job_id=job.job_id, reason=reason)
    return failed
