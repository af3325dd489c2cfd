"""Results worker: saves each job's SchizodotUsers item, sends it to the EHR,
completes the job, serves the read API and sweeps jobs that stopped making progress."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.results.api import create_app
from services.results.ehr import EhrPublisher
from services.results.handlers import RESULTS, ResultsDeps, sweep_stuck_jobs
from services.results.settings import ResultsSettings
from services.results.writer import ResultsWriter
from shared.aws import sync_client
from shared.history import PatientHistory
from shared.http import serve_http
from shared.worker import StageContext, run_stage

log = structlog.get_logger()


def build_deps(context: StageContext[ResultsSettings]) -> ResultsDeps:
    settings = context.settings
    ehr = EhrPublisher(
        context.aws.sqs,
        sync_client(context.common, "sns") if settings.ehr_topic_arn else None,
        settings.ehr_queue_url,
        settings.ehr_topic_arn,
    )
    if not ehr.enabled:
        log.info("EHR delivery off: set RESULTS_EHR_QUEUE_URL or RESULTS_EHR_TOPIC_ARN to send FHIR results")
    return ResultsDeps(settings, context.storage, ResultsWriter(context.aws.dynamodb, context.common.users_table), ehr)


async def run_sweeper(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await sweep_stuck_jobs(context.jobs, context.settings)
        except Exception:
            log.exception("sweep failed; will try again")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=context.settings.sweep_interval_seconds)


async def serve_api(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    settings = context.settings
    if not (settings.api_keys or settings.api_bearer_tokens):
        log.warning("results API has no credentials configured: every data route answers 401; "
                    "set RESULTS_API_KEYS or RESULTS_API_BEARER_TOKENS")
    app = create_app(settings, context.jobs, PatientHistory(context.aws.dynamodb, context.common.users_table))
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="RESULTS_API_PORT",
                     required=False)  # saving results matters more than serving reads


def main() -> None:
    run_stage(RESULTS, ResultsSettings(), build_deps, side_tasks=(run_sweeper, serve_api))


if __name__ == "__main__":
    main()
