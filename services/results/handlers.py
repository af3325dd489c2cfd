"""Results: the one writer of SchizodotUsers, and the stage that completes jobs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from opentelemetry import trace

from services.results.ehr import EhrPublisher, encode_results_event
from services.results.fhir import FHIR_VERSION, build_bundle
from services.fusion.findings import build_results
from services.results.user_item import build_user_item, job_summary
from services.results.settings import ResultsSettings
from shared.dynamo import put_if_absent
from shared.events import FUSION_COMPLETED, FusionCompleted, decode_event, event_data
from shared.jobs import QUEUED, ClaimOutcome, JobsRepository, pipeline_state
from shared.messaging import Delivery
from shared.modality import load_modality_results
from shared.worker import StageContext

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.results")


class ResultsWriter:
    """Access pattern 5, written once per job whatever the deliveries."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    async def save(self, item: dict[str, Any]) -> bool:
        """False when an earlier delivery saved it already."""
        return await put_if_absent(self._db, self._table, item, "user_id")


async def handle_fusion_completed(
    delivery: Delivery, context: StageContext, writer: ResultsWriter, ehr: EhrPublisher | None = None
) -> None:
    notice = event_data(decode_event(delivery.body), FusionCompleted, FUSION_COMPLETED)
    delivery.job_id = notice.job_id
    with structlog.contextvars.bound_contextvars(job_id=notice.job_id):
        run = await context.jobs.claim_stage(notice.job_id, "results", delivery.message_id, "Saving the results")
        if run.outcome is not ClaimOutcome.CLAIMED:
            log.info("results not written", outcome=run.outcome.value)
            return
        state = pipeline_state(run.job)
        documents = await load_modality_results(context.storage, run.job)
        fusion = await context.storage.get_json(notice.artifact_key)
        skipped = state.get("skipped", {})
        results = build_results(fusion, documents.get("audio"), documents.get("vision"), skipped)
        item = build_user_item(run.job, fusion["analysed_at"], results, skipped)
        with tracer.start_as_current_span("save results") as span:
            span.set_attribute("schizodot.job_id", notice.job_id)
            saved = await writer.save(item)
        message = "Analysis completed successfully"
        if ehr is not None and ehr.enabled:
            # Before completing: a crash in between re-sends (same event id) instead of losing the event.
            settings: ResultsSettings = context.settings  # type: ignore[assignment]
            bundle = build_bundle(item, run.job, settings.bucket, settings.patient_identifier_system)
            try:
                with tracer.start_as_current_span("send results to the EHR"):
                    await ehr.publish(notice.job_id,
                                      encode_results_event(notice.job_id, bundle, ehr.source, FHIR_VERSION))
            except Exception as error:
                if delivery.receive_count < settings.max_receive_count:
                    raise  # retried with back-off like any transient failure
                # The analysis is saved and readable; only the push failed, so the job still completes.
                reason = f"{type(error).__name__}: {error}"[:300]
                log.error("results could not be sent to the EHR; job completed without it", error=reason)
                message = f"Analysis completed; sending it to the EHR failed: {reason}"
        await context.jobs.complete(run, job_summary(item), message)
        log.info("results saved; job completed", new_item=saved, risk_level=item["results"]["multimodal_fusion"]["risk_level"])


async def sweep_stuck_jobs(jobs: JobsRepository, settings: ResultsSettings, now: datetime | None = None) -> list[str]:
    """Fail active jobs that made no progress within `stuck_after_seconds`."""
    now = now or datetime.now(timezone.utc)
    cutoff = (now - timedelta(seconds=settings.stuck_after_seconds)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    failed = []
    for job in await jobs.find_stuck(cutoff):
        minutes = settings.stuck_after_seconds / 60
        if job["status"] == QUEUED:
            reason = f"the upload did not arrive within {minutes:.0f} min; submit the check-in again"
        else:
            reason = (
                f"the analysis made no progress for {minutes:.0f} min (last step: {job.get('message', 'unknown')}); "
                "it was stopped, submit the check-in again"
            )
        if await jobs.fail(job["job_id"], reason, "sweeper"):
            failed.append(job["job_id"])
            log.warning("stuck job failed", job_id=job["job_id"], reason=reason)
    return failed
