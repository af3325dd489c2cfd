"""What every stage process does around its handler: logging, tracing and
metrics, AWS clients (instrumented), queue discovery, signals, the consumer
loop and side tasks (the stage's own ones and the queue-depth poller)."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

import structlog

from shared.aws import AsyncClients
from shared.errors import ConfigurationError
from shared.jobs import JobsRepository, StageRun
from shared.logs import configure_logging
from shared.messaging import Handler, Publisher, QueueConsumer
from shared.metrics import MeteredJobs, configure_metrics, watch_queue_depth
from shared.settings import PUBLISHES_TO, CommonSettings
from shared.storage import Storage
from shared.tracing import configure_tracing, instrument_aws

log = structlog.get_logger()
T = TypeVar("T")


@dataclass
class StageContext:
    """The adapters a stage handler gets, built once per process."""

    settings: CommonSettings
    aws: AsyncClients
    jobs: JobsRepository
    storage: Storage
    publisher: Publisher
    queue_urls: dict[str, str]


async def resolve_queues(
    sqs: Any, settings: CommonSettings, stage: str
) -> tuple[dict[str, str], dict[str, str]]:
    """The stage's own queue and DLQ and the queues it sends to; nothing else,
    so its IAM role needs no more."""

    async def url(name: str) -> str:
        return (await sqs.get_queue_url(QueueName=name))["QueueUrl"]

    queues = {s: await url(settings.queue_name(s)) for s in (stage, *PUBLISHES_TO[stage])}
    return queues, {stage: await url(settings.dead_letter_queue_name(stage))}


async def run_blocking(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """Run CPU-bound work (model inference) off the event loop, keeping log context."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(context.run, fn, *args))


class ProgressBridge:
    """A plain callback for analysers running in a thread, reporting stage
    progress on the event loop without blocking the analyser, at most every
    `min_interval` seconds."""

    def __init__(self, jobs: JobsRepository, run: StageRun, prefix: str, min_interval: float = 1.0) -> None:
        self._jobs = jobs
        self._run = run
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
            self._jobs.report_progress(self._run, fraction, f"{self._prefix}: {message}"), self._loop
        )


SideTask = Callable[[StageContext, asyncio.Event], Awaitable[None]]


def run_stage(
    settings: CommonSettings,
    stage: str,
    build_handler: Callable[[StageContext], Handler],
    side_tasks: tuple[SideTask, ...] = (),
) -> None:
    """Entry point of a stage process: blocks until SIGTERM/SIGINT."""
    configure_logging(settings.service_name, settings.log_level, stage=stage,
                      pseudonym_key=settings.pseudonym_key)
    tracer_provider = configure_tracing(settings.service_name)
    meter_provider = configure_metrics(settings.service_name, settings)
    instrument_aws()
    try:
        asyncio.run(_serve(settings, stage, build_handler, side_tasks))
    except ConfigurationError as error:  # a missing model, a taken port, ...
        log.error("cannot start as configured", error=str(error), setting=error.setting)
        sys.exit(2)
    finally:
        tracer_provider.shutdown()  # flushes the spans still batched
        meter_provider.shutdown()


async def _serve(
    settings: CommonSettings,
    stage: str,
    build_handler: Callable[[StageContext], Handler],
    side_tasks: tuple[SideTask, ...],
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with AsyncClients(settings) as aws:
        queues, dead_letters = await resolve_queues(aws.sqs, settings, stage)
        context = StageContext(
            settings=settings,
            aws=aws,
            jobs=MeteredJobs(aws.dynamodb, settings.jobs_table),
            storage=Storage(aws.s3, settings.bucket),
            publisher=Publisher(aws.sqs, queues, source=f"urn:schizodot:{stage}"),
            queue_urls=queues,
        )
        consumer = QueueConsumer(
            sqs=aws.sqs,
            jobs=context.jobs,
            stage=stage,
            queue_url=queues[stage],
            dead_letter_url=dead_letters[stage],
            handler=build_handler(context),
            settings=settings,
        )
        tasks = [asyncio.create_task(consumer.run(stop))]
        tasks += [asyncio.create_task(side(context, stop)) for side in side_tasks]
        tasks.append(asyncio.create_task(watch_queue_depth(
            aws.sqs, (queues[stage], dead_letters[stage]), settings.queue_metrics_interval_seconds, stop
        )))
        log.info("stage ready", stage=stage)
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            if task.exception():
                raise task.exception()
