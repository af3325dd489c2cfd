"""Results worker: saves each job's SchizodotUsers item, sends it to the EHR,
completes the job, serves the read API, runs erasures from the erasure queue and
sweeps jobs that stopped making progress."""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from services.results.api import ResultsAccess, create_app
from services.results.ehr import EhrPublisher
from services.results.erasure import (
    ERASURE_QUEUE,
    DynamoErasures,
    ErasureDeps,
    ErasureHandler,
    ErasureRequested,
    encode_erasure,
)
from services.results.handlers import RESULTS, ResultsDeps, sweep_stuck_jobs
from services.results.settings import ResultsSettings
from services.results.writer import ResultsWriter
from shared.access import Access, build_access
from shared.aws import sync_client
from shared.history import PatientHistory
from shared.http import serve_http
from shared.messaging import QueueConsumer
from shared.worker import StageContext, run_stage

log = structlog.get_logger()
SERVICE = "schizodot-results"


def _access(context: StageContext[ResultsSettings]) -> Access:
    """Built once per process and shared by the stage, the API and the erasure worker."""
    cached = getattr(context, "_access", None)
    if cached is None:
        cached = build_access(context.common, context.aws, service=SERVICE)
        context._access = cached  # type: ignore[attr-defined]
    return cached


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
    return ResultsDeps(settings, context.storage, ResultsWriter(context.aws.dynamodb, context.common.users_table), ehr,
                       _access(context).audit)


async def run_sweeper(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await sweep_stuck_jobs(context.jobs, context.settings)
        except Exception:
            log.exception("sweep failed; will try again")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=context.settings.sweep_interval_seconds)


async def _erasure_queue(context: StageContext[ResultsSettings]) -> tuple[str, str]:
    sqs, common = context.aws.sqs, context.common
    queue = (await sqs.get_queue_url(QueueName=common.queue_name(ERASURE_QUEUE)))["QueueUrl"]
    dead_letters = (await sqs.get_queue_url(QueueName=common.dead_letter_queue_name(ERASURE_QUEUE)))["QueueUrl"]
    return queue, dead_letters


async def serve_api(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    settings, common = context.settings, context.common
    access = _access(context)
    queue, _ = await _erasure_queue(context)

    async def enqueue_erasure(body: str) -> str:
        return (await context.aws.sqs.send_message(QueueUrl=queue, MessageBody=body))["MessageId"]

    app = create_app(settings, context.jobs, PatientHistory(context.aws.dynamodb, common.users_table),
                     ResultsAccess(access.authenticator, access.audit, access.api_keys,
                                   DynamoErasures(context.aws.dynamodb, common.erasures_table), enqueue_erasure))
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="RESULTS_API_PORT",
                     required=False)  # saving results matters more than serving reads


async def run_erasures(context: StageContext[ResultsSettings], stop: asyncio.Event) -> None:
    """Erasures are jobs of their own on the erasure queue, run by the same consumer as every stage."""
    common, aws = context.common, context.aws
    access = _access(context)
    queue, dead_letters = await _erasure_queue(context)
    delay = context.settings.erasure_sweep_delay_seconds

    async def schedule_sweep(request: ErasureRequested) -> None:
        await aws.sqs.send_message(QueueUrl=queue, MessageBody=encode_erasure(request), DelaySeconds=delay)

    deps = ErasureDeps(jobs=context.jobs, storage=context.storage,
                       results=ResultsWriter(aws.dynamodb, common.users_table),
                       history=PatientHistory(aws.dynamodb, common.users_table), links=access.links,
                       erasures=DynamoErasures(aws.dynamodb, common.erasures_table), audit=access.audit,
                       schedule_sweep=schedule_sweep)
    consumer = QueueConsumer(sqs=aws.sqs, jobs=context.jobs, stage=ERASURE_QUEUE, queue_url=queue,
                             dead_letter_url=dead_letters, handler=ErasureHandler(deps), settings=common)
    await consumer.run(stop)


def main() -> None:
    run_stage(RESULTS, ResultsSettings(), build_deps, side_tasks=(run_sweeper, serve_api, run_erasures))


if __name__ == "__main__":
    main()
