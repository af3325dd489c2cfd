"""Results worker: saves each job's SchizodotUsers item, sends it to the EHR,
completes the job, serves the read API and sweeps jobs that stopped making progress."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import structlog

from services.results.api import create_app
from services.results.ehr import EhrPublisher
from services.results.handlers import ResultsWriter, handle_fusion_completed, sweep_stuck_jobs
from services.results.settings import ResultsSettings
from shared.aws import sync_client
from shared.history import PatientHistory
from shared.http import serve_http
from shared.worker import StageContext, run_stage

log = structlog.get_logger()


def build_handler(context: StageContext):
    settings: ResultsSettings = context.settings  # type: ignore[assignment]
    writer = ResultsWriter(context.aws.dynamodb, settings.users_table)
    ehr = EhrPublisher(
        context.aws.sqs,
        sync_client(settings, "sns") if settings.ehr_topic_arn else None,
        settings.ehr_queue_url,
        settings.ehr_topic_arn,
    )
    if not ehr.enabled:
        log.info("EHR delivery off: set RESULTS_EHR_QUEUE_URL or RESULTS_EHR_TOPIC_ARN to send FHIR results")
    return functools.partial(handle_fusion_completed, context=context, writer=writer, ehr=ehr)


async def run_sweeper(context: StageContext, stop: asyncio.Event) -> None:
    settings: ResultsSettings = context.settings  # type: ignore[assignment]
    while not stop.is_set():
        try:
            await sweep_stuck_jobs(context.jobs, settings)
        except Exception:
            log.exception("sweep failed; will try again")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.sweep_interval_seconds)


async def serve_api(context: StageContext, stop: asyncio.Event) -> None:
    settings: ResultsSettings = context.settings  # type: ignore[assignment]
    if not (settings.api_keys or settings.bearer_tokens):
        log.warning("results API has no credentials configured: every data route answers 401; "
                    "set RESULTS_API_KEYS or RESULTS_API_BEARER_TOKENS")
    app = create_app(settings, context.jobs, PatientHistory(context.aws.dynamodb, settings.users_table))
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="RESULTS_API_PORT",
                     required=False)  # saving results matters more than serving reads


def main() -> None:
    run_stage(ResultsSettings(), "results", build_handler, side_tasks=(run_sweeper, serve_api))


if __name__ == "__main__":
    main()
