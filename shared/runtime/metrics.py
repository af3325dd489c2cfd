"""Metrics an SRE can alert on, through OpenTelemetry, served for Prometheus.

Each stage process serves `/metrics` on `SCHIZODOT_METRICS_PORT` (0 = off).
Names as Prometheus shows them (the `service_name` label says which service):

| metric | labels | what |
|---|---|---|
| `schizodot_stage_duration_seconds` (histogram) | stage, outcome | time a stage spent on one message; outcome = success, input_error, retry, dead_lettered, released |
| `schizodot_jobs_completed_total` | | jobs this process completed |
| `schizodot_jobs_failed_total` | stage, reason | jobs failed; reason = input (the check-in cannot be analysed), retries_exhausted, stuck (the sweeper), other |
| `schizodot_job_duration_seconds` (histogram) | | job creation to completion |
| `schizodot_messages_retried_total` | queue | deliveries put back for a retry |
| `schizodot_messages_dead_lettered_total` | queue, reason | malformed or retries_exhausted |
| `schizodot_message_wait_seconds` (histogram) | queue | time from send to receive |
| `schizodot_queue_messages` (gauge) | queue, state | visible, in_flight, delayed (the stage's queue and its DLQ) |
| `schizodot_queue_oldest_message_age_seconds` (gauge) | queue | see `QueueStats` |
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable
from typing import Any

import structlog
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from shared.settings import CommonSettings

log = structlog.get_logger()
meter = metrics.get_meter("schizodot")

_SECONDS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)

STAGE_DURATION = meter.create_histogram(
    "schizodot.stage.duration", unit="s", description="Time a stage spent on one message",
    explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
)
JOBS_COMPLETED = meter.create_counter("schizodot.jobs.completed", description="Jobs completed")
JOBS_FAILED = meter.create_counter("schizodot.jobs.failed", description="Jobs failed, by stage and reason class")
JOB_DURATION = meter.create_histogram(
    "schizodot.job.duration", unit="s", description="Job creation to completion",
    explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
)
MESSAGES_RETRIED = meter.create_counter("schizodot.messages.retried", description="Deliveries put back for a retry")
MESSAGES_DEAD_LETTERED = meter.create_counter(
    "schizodot.messages.dead_lettered", description="Messages moved to the dead-letter queue"
)
MESSAGE_WAIT = meter.create_histogram(
    "schizodot.message.wait", unit="s", description="Time from send to receive",
    explicit_bucket_boundaries_advisory=_SECONDS_BUCKETS,
)


# --- queues --------------------------------------------------------------------------


class QueueStats:
    """Depth and oldest-message age of the queues a process watches.

    SQS has no queue attribute for the oldest message's age (on AWS it is the
    CloudWatch metric ApproximateAgeOfOldestMessage, and moto has neither), so
    the consumer reports what it sees: on each receive, the send time of the
    oldest message it got (the head of the queue); an empty receive, or a
    depth poll finding nothing waiting, resets it to 0. While messages wait
    and every worker is busy, the age keeps growing from the last head seen:
    an upper bound, which is the safe side to alert on.
    """

    def __init__(self) -> None:
        self._depth: dict[tuple[str, str], int] = {}
        self._head_sent_at: dict[str, float | None] = {}
        meter.create_observable_gauge(
            "schizodot.queue.messages", callbacks=[self._observe_depth],
            description="Messages in a queue: visible, in_flight, delayed",
        )
        meter.create_observable_gauge(
            "schizodot.queue.oldest_message_age", unit="s", callbacks=[self._observe_age],
            description="Age of the oldest message waiting in the queue (upper bound)",
        )

    def received(self, queue: str, sent_timestamps_ms: Iterable[int]) -> None:
        now = time.time()
        sent = [ts / 1000 for ts in sent_timestamps_ms]
        for moment in sent:
            MESSAGE_WAIT.record(max(now - moment, 0.0), {"queue": queue})
        self._head_sent_at[queue] = min(sent) if sent else None

    def depth(self, queue: str, visible: int, in_flight: int, delayed: int) -> None:
        self._depth[(queue, "visible")] = visible
        self._depth[(queue, "in_flight")] = in_flight
        self._depth[(queue, "delayed")] = delayed
        if visible == 0:
            self._head_sent_at[queue] = None

    def _observe_depth(self, _options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(count, {"queue": q, "state": s}) for (q, s), count in self._depth.items()]

    def _observe_age(self, _options: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        return [
            Observation(0.0 if head is None else max(now - head, 0.0), {"queue": queue})
            for queue, head in self._head_sent_at.items()
        ]


QUEUE_STATS = QueueStats()


async def watch_queue_depth(sqs: Any, queue_urls: Iterable[str], interval: float, stop: asyncio.Event) -> None:
    """Side task: poll the queues' approximate counts every `interval` seconds."""
    urls = list(queue_urls)
    while not stop.is_set():
        for url in urls:
            try:
                attributes = (await sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed",
                    ],
                ))["Attributes"]
                QUEUE_STATS.depth(
                    url.rsplit("/", 1)[-1],
                    int(attributes.get("ApproximateNumberOfMessages", 0)),
                    int(attributes.get("ApproximateNumberOfMessagesNotVisible", 0)),
                    int(attributes.get("ApproximateNumberOfMessagesDelayed", 0)),
                )
            except Exception:
                log.warning("queue depth poll failed", queue=url.rsplit("/", 1)[-1], exc_info=True)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=interval)


# --- set-up ----------------------------------------------------------------------------


def configure_metrics(service_name: str, settings: CommonSettings) -> Any:
    """A MeterProvider whose metrics `/metrics` serves on `settings.metrics_port`
    (none when 0). A port already taken is logged and the service runs on."""
    import os

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.resources import Resource

    readers = []
    if settings.metrics_port:
        from opentelemetry.exporter.prometheus import PrometheusMetricReader
        from prometheus_client import start_http_server

        try:
            start_http_server(settings.metrics_port, addr=settings.metrics_host)
            readers.append(PrometheusMetricReader(resource_attribute_filter=lambda key: key == "service.name"))
            log.info("metrics served", url=f"http://{settings.metrics_host}:{settings.metrics_port}/metrics")
        except OSError as error:
            log.warning("metrics endpoint not started", port=settings.metrics_port, error=str(error))
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = MeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(provider)
    return provider
