"""What every stage process does around its stage: logging, tracing and
metrics, AWS clients (instrumented), queue discovery, signals, the consumer
loop running the stage (`shared.runtime.runner`) and side tasks (the stage's own ones
and the queue-depth poller).

A service's `main.py` is its composition root: it declares nothing but what the
stage's handler gets (`build_deps`) and calls `run_stage`.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog

from shared.aws.clients import AsyncClients
from shared.aws.jobs import JobsRepository, JobStore
from shared.aws.storage import Storage
from shared.domain.errors import ConfigurationError
from shared.runtime.logs import configure_logging
from shared.runtime.messaging import Publisher, QueueConsumer
from shared.runtime.metered_jobs import MeteredJobs
from shared.runtime.metrics import configure_metrics, watch_queue_depth
from shared.runtime.runner import Stage, StageRunner
from shared.runtime.topology import PUBLISHES_TO
from shared.runtime.tracing import configure_tracing, instrument_aws
from shared.settings import CommonSettings, StageSettings

log = structlog.get_logger()
S = TypeVar("S", bound=StageSettings)
D = TypeVar("D")
A = TypeVar("A")  # what a service composes from the context (services/results: its ResultsApp)


@dataclass
class StageContext(Generic[S]):
    """The adapters a stage gets, built once per process."""

    settings: S  # the service's own
    common: CommonSettings
    aws: AsyncClients
    jobs: JobStore
    storage: Storage
    publisher: Publisher
    queue_urls: dict[str, str]


SideTask = Callable[[A, asyncio.Event], Awaitable[None]]  # given what `compose` built, and the stop event


def _as_is(context: StageContext[S]) -> Any:
    return context


async def resolve_queues(
    sqs: Any, settings: CommonSettings, stage: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The stage's own queue and DLQ and the queues it sends to; nothing else,
    so its IAM role needs no more."""

    async def url(name: str) -> str:
        return (await sqs.get_queue_url(QueueName=name))["QueueUrl"]

    queues = {s: await url(settings.queue_name(s)) for s in (stage, *PUBLISHES_TO[stage])}
    return queues, {stage: await url(settings.dead_letter_queue_name(stage))}


def run_stage(
    stage: Stage[Any, D],
    settings: S,
    build_deps: Callable[[A], D],
    side_tasks: tuple[SideTask[A], ...] = (),
    common: CommonSettings | None = None,
    compose: Callable[[StageContext[S]], A] = _as_is,
) -> None:
    """Entry point of a stage process: blocks until SIGTERM/SIGINT.

    `compose` builds, once, what `build_deps` and the side tasks are given (by default the
    `StageContext` itself; a service with many adapters builds its own frozen app from it)."""
    common = common or CommonSettings()
    service_name = common.service_name or f"schizodot-{stage.name}"
    # Every AWS request names the service that sent it (`app/<name>` in its User-Agent: CloudTrail's
    # userAgent, the local AWS server's request log), unless the deployment names it otherwise.
    os.environ.setdefault("AWS_SDK_UA_APP_ID", service_name)
    configure_logging(service_name, common.log_level, stage=stage.name, pseudonym_key=common.pseudonym_key)
    tracer_provider = configure_tracing(service_name)
    meter_provider = configure_metrics(service_name, common)
    instrument_aws()
    try:
        common.check_pseudonym_key(required=False)  # the APIs require one (shared.identity.access)
        asyncio.run(_serve(stage, settings, common, build_deps, side_tasks, compose))
    except ConfigurationError as error:  # a missing model, a taken port, ...
        log.error("cannot start as configured", error=str(error), setting=error.setting)
        sys.exit(2)
    finally:
        tracer_provider.shutdown()  # flushes the spans still batched
        meter_provider.shutdown()


async def _serve(
    stage: Stage[Any, D],
    settings: S,
    common: CommonSettings,
    build_deps: Callable[[A], D],
    side_tasks: tuple[SideTask[A], ...],
    compose: Callable[[StageContext[S]], A],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncClients(common) as aws:
        queues, dead_letters = await resolve_queues(aws.sqs, common, stage.name)
        context = StageContext(
            settings=settings,
            common=common,
            aws=aws,
            jobs=MeteredJobs(JobsRepository(aws.dynamodb, common.jobs_table)),
            storage=Storage(aws.s3, common.bucket),
            publisher=Publisher(aws.sqs, queues, source=f"urn:schizodot:{stage.name}"),
            queue_urls=queues,
        )
        app = compose(context)
        runner = StageRunner(stage, build_deps(app), context.jobs, context.storage, context.publisher)
        consumer = QueueConsumer(
            sqs=aws.sqs,
            jobs=context.jobs,
            stage=stage.name,
            queue_url=queues[stage.name],
            dead_letter_url=dead_letters[stage.name],
            handler=runner,
            settings=common,
        )
        tasks = [asyncio.create_task(consumer.run(stop))]
        tasks += [asyncio.create_task(side(app, stop)) for side in side_tasks]
        tasks.append(asyncio.create_task(watch_queue_depth(
            aws.sqs, (queues[stage.name], dead_letters[stage.name]), common.queue_metrics_interval_seconds, stop
        )))
        log.info("stage ready", stage=stage.name)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception():
                raise task.exception()
