"""SQS publishing and the consumer loop every stage runs.

The consumer long-polls, holds up to `concurrency` messages at once, extends a
message's visibility while its handler works (heartbeat), deletes it on success
and decides what a failure means:
- `MalformedMessage`: not a valid event; moved to the dead-letter queue with the
  reason, since no retry can fix it;
- `InputError`: the check-in cannot be analysed; the job fails with the
  message and the delivery is done;
- anything else: retried with back-off; on the last allowed receive the job
  fails with the reason and the message is dead-lettered. The queue's
  RedrivePolicy stays as the safety net for workers that die on a message.
On stop (SIGTERM) it takes no new messages, lets in-flight ones finish within
the grace period and releases the rest for immediate redelivery.

Tracing follows the OpenTelemetry messaging conventions: `publish <queue>`
PRODUCER spans, `process <queue>` CONSUMER spans that are children of the
producer's context and link to it. A message without trace context continues
the trace its sender started (CloudEvents distributed-tracing extension) or,
for an S3 upload notification, the trace stored on the job at creation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_plus

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from pydantic import BaseModel

from shared.domain import RESERVED_METADATA_KEY, job_id_from_upload_key
from shared.errors import InputError, MalformedMessage
from shared.events import encode_event
from shared.jobs import JobsRepository
from shared.logs import redact
from shared.metrics import (
    MESSAGES_DEAD_LETTERED,
    MESSAGES_RETRIED,
    QUEUE_STATS,
    STAGE_DURATION,
    failing_as,
)
from shared.settings import CommonSettings
from shared.tracing import carrier_context, inject_message_attributes, message_trace_carrier

log = structlog.get_logger()
tracer = trace.get_tracer("schizodot.messaging")

ERROR_ATTRIBUTE = "schizodot_error"


@dataclass
class Delivery:
    """One received SQS message."""

    message_id: str
    receipt_handle: str
    body: str
    attributes: dict[str, Any]
    receive_count: int
    queue_name: str
    job_id: str | None = None  # set by the handler as soon as it knows, for failure handling


Handler = Callable[[Delivery], Awaitable[None]]


class Publisher:
    """Sends CloudEvents to stage queues, with a producer span and trace context."""

    def __init__(self, sqs: Any, queue_urls: dict[str, str], source: str) -> None:
        self._sqs = sqs
        self._urls = queue_urls
        self._source = source

    async def publish(self, stage: str, event_type: str, job_id: str, data: BaseModel) -> str:
        queue_url = self._urls[stage]
        queue_name = queue_url.rsplit("/", 1)[-1]
        with tracer.start_as_current_span(f"publish {queue_name}", kind=SpanKind.PRODUCER) as span:
            span.set_attribute("messaging.system", "aws_sqs")
            span.set_attribute("messaging.operation.type", "send")  # "publish" before semconv 1.28
            span.set_attribute("messaging.operation.name", "publish")
            span.set_attribute("messaging.destination.name", queue_name)
            span.set_attribute("schizodot.job_id", job_id)
            response = await self._sqs.send_message(
                QueueUrl=queue_url,
                MessageBody=encode_event(event_type, self._source, job_id, data),
                MessageAttributes=inject_message_attributes(),
            )
            span.set_attribute("messaging.message.id", response["MessageId"])
            return response["MessageId"]


class QueueConsumer:
    def __init__(
        self,
        *,
        sqs: Any,
        jobs: JobsRepository,
        stage: str,
        queue_url: str,
        dead_letter_url: str,
        handler: Handler,
        settings: CommonSettings,
    ) -> None:
        self._sqs = sqs
        self._jobs = jobs
        self._stage = stage
        self._queue_url = queue_url
        self._queue_name = queue_url.rsplit("/", 1)[-1]
        self._dead_letter_url = dead_letter_url
        self._handler = handler
        self._settings = settings
        self._in_flight: dict[asyncio.Task, Delivery] = {}

    async def run(self, stop: asyncio.Event) -> None:
        slots = asyncio.Semaphore(self._settings.concurrency)
        log.info("consumer started", queue=self._queue_name, concurrency=self._settings.concurrency)
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                await slots.acquire()
                free = 1
                while free < min(self._settings.concurrency, 10) and not slots.locked():
                    await slots.acquire()
                    free += 1
                receiving = asyncio.create_task(self._receive(free))
                await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()  # unreceived messages simply stay in the queue
                    for _ in range(free):
                        slots.release()
                    break
                try:
                    messages = receiving.result()
                except Exception:
                    log.exception("receive failed; retrying", queue=self._queue_name)
                    messages = []
                    await asyncio.sleep(1)
                for _ in range(free - len(messages)):
                    slots.release()
                for message in messages:
                    delivery = _delivery(message, self._queue_name)
                    task = asyncio.create_task(self._process(delivery))
                    self._in_flight[task] = delivery
                    task.add_done_callback(lambda t: (self._in_flight.pop(t, None), slots.release()))
        finally:
            stopping.cancel()
            await self._drain()
        log.info("consumer stopped", queue=self._queue_name)

    async def _receive(self, count: int) -> list[dict]:
        response = await self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=self._settings.wait_time_seconds,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        messages = response.get("Messages", [])
        QUEUE_STATS.received(
            self._queue_name,
            [int(m["Attributes"]["SentTimestamp"]) for m in messages if "SentTimestamp" in m.get("Attributes", {})],
        )
        return messages

    async def _drain(self) -> None:
        if not self._in_flight:
            return
        log.info("finishing in-flight messages", count=len(self._in_flight))
        _, pending = await asyncio.wait(
            set(self._in_flight), timeout=self._settings.shutdown_grace_seconds
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def _process(self, delivery: Delivery) -> None:
        parent, origin = await self._parent_context(delivery)
        producer = trace.get_current_span(parent).get_span_context() if parent is not None else None
        # The messaging conventions ask for both: child of the producer, and a link to it.
        links = [Link(producer, {"schizodot.context_from": origin})] if producer is not None else []
        with structlog.contextvars.bound_contextvars(stage=self._stage, message_id=delivery.message_id), \
                tracer.start_as_current_span(
                    f"process {self._queue_name}", context=parent, kind=SpanKind.CONSUMER, links=links
                ) as span:
            span.set_attribute("messaging.system", "aws_sqs")
            span.set_attribute("messaging.operation.type", "process")
            span.set_attribute("messaging.operation.name", "process")
            span.set_attribute("messaging.destination.name", self._queue_name)
            span.set_attribute("messaging.message.id", delivery.message_id)
            span.set_attribute("messaging.aws_sqs.receive_count", delivery.receive_count)
            span.set_attribute("schizodot.stage", self._stage)
            heartbeat = asyncio.create_task(self._heartbeat(delivery))
            started = time.monotonic()
            outcome = "success"
            try:
                with failing_as("input"):  # a handler that fails a job itself refuses its input
                    await self._handler(delivery)
                await self._delete(delivery)
            except asyncio.CancelledError:
                outcome = "released"
                await asyncio.shield(self._release(delivery))
                raise
            except Exception as error:
                description = redact(f"{type(error).__name__}: {error}")
                span.add_event("exception", {"exception.type": type(error).__name__, "exception.message": description})
                span.set_status(Status(StatusCode.ERROR, description))
                try:
                    outcome = await self._settle_failure(delivery, error)
                except Exception:  # AWS unreachable: SQS redelivers after the visibility timeout
                    outcome = "retry"
                    log.exception("could not settle a failed message", job_id=delivery.job_id)
            finally:
                heartbeat.cancel()
                if delivery.job_id:
                    span.set_attribute("schizodot.job_id", delivery.job_id)
                seconds = time.monotonic() - started
                STAGE_DURATION.record(seconds, {"stage": self._stage, "outcome": outcome})
                log.debug("message handled", seconds=round(seconds, 3), outcome=outcome)

    async def _parent_context(self, delivery: Delivery) -> tuple[Context | None, str]:
        """The trace a delivery continues, and where its context came from."""
        context = carrier_context(message_trace_carrier(delivery.attributes))
        if context is not None:
            return context, "message_attributes"
        try:
            body = json.loads(delivery.body)
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError):
            return None, "none"
        if not isinstance(body, dict):
            return None, "none"
        context = carrier_context(body)  # CloudEvents distributed-tracing extension
        if context is not None:
            return context, "cloudevent"
        job_id = _uploaded_job_id(body)
        if job_id is not None:
            try:
                job = await self._jobs.get(job_id)
            except Exception:  # tracing must never stop the work; the handler will meet the error
                log.warning("could not read the job's trace context", job_id=job_id, exc_info=True)
                return None, "none"
            stored = ((job or {}).get("metadata", {}).get(RESERVED_METADATA_KEY, {}) or {}).get("trace_context")
            context = carrier_context(stored if isinstance(stored, dict) else None)
            if context is not None:
                return context, "job"
        return None, "none"

    async def _settle_failure(self, delivery: Delivery, error: Exception) -> str:
        """Decide what a failure means; returns the outcome for the stage metrics."""
        if isinstance(error, MalformedMessage):
            log.warning("malformed message dead-lettered", reason=str(error))
            await self._dead_letter(delivery, str(error), "malformed")
            return "dead_lettered"
        if isinstance(error, InputError):
            log.info("check-in cannot be analysed", job_id=delivery.job_id, reason=str(error))
            if delivery.job_id:
                with failing_as("input"):
                    await self._jobs.fail(delivery.job_id, str(error), self._stage)
            await self._delete(delivery)
            return "input_error"
        reason = f"{type(error).__name__}: {error}"  # transient until proven otherwise
        if delivery.receive_count >= self._settings.max_receive_count:
            log.error("giving up on message", job_id=delivery.job_id, attempts=delivery.receive_count,
                      exc_info=error)
            if delivery.job_id:
                with failing_as("retries_exhausted"):
                    await self._jobs.fail(
                        delivery.job_id,
                        f"the {self._stage} stage failed {delivery.receive_count} times; last error: {reason}",
                        self._stage,
                    )
            await self._dead_letter(delivery, reason, "retries_exhausted")
            return "dead_lettered"
        delay = min(self._settings.retry_backoff_seconds * 2 ** (delivery.receive_count - 1), 900)
        log.warning("handler failed; will retry", job_id=delivery.job_id, error=reason,
                    attempt=delivery.receive_count, retry_in_s=delay, exc_info=error)
        await self._change_visibility(delivery, delay)
        MESSAGES_RETRIED.add(1, {"queue": self._queue_name})
        return "retry"

    async def _heartbeat(self, delivery: Delivery) -> None:
        period = max(self._settings.visibility_timeout_seconds / 3, 1)
        while True:
            await asyncio.sleep(period)
            try:
                await self._change_visibility(delivery, self._settings.visibility_timeout_seconds)
            except Exception:
                log.warning("visibility heartbeat failed", exc_info=True)

    async def _change_visibility(self, delivery: Delivery, seconds: int) -> None:
        await self._sqs.change_message_visibility(
            QueueUrl=self._queue_url, ReceiptHandle=delivery.receipt_handle, VisibilityTimeout=int(seconds)
        )

    async def _release(self, delivery: Delivery) -> None:
        try:
            await self._change_visibility(delivery, 0)
            log.info("released unfinished message for redelivery", job_id=delivery.job_id)
        except Exception:
            log.warning("could not release message; it returns after its visibility timeout", exc_info=True)

    async def _delete(self, delivery: Delivery) -> None:
        await self._sqs.delete_message(QueueUrl=self._queue_url, ReceiptHandle=delivery.receipt_handle)

    async def _dead_letter(self, delivery: Delivery, reason: str, reason_class: str) -> None:
        attributes = {k: v for k, v in delivery.attributes.items() if k != ERROR_ATTRIBUTE}
        attributes = dict(list(attributes.items())[:8])
        attributes[ERROR_ATTRIBUTE] = {"DataType": "String", "StringValue": reason[:1000] or "unknown"}
        attributes["schizodot_source_queue"] = {"DataType": "String", "StringValue": self._queue_name}
        await self._sqs.send_message(
            QueueUrl=self._dead_letter_url, MessageBody=delivery.body or "(empty)", MessageAttributes=attributes
        )
        await self._delete(delivery)
        MESSAGES_DEAD_LETTERED.add(1, {"queue": self._queue_name, "reason": reason_class})


def _delivery(message: dict, queue_name: str) -> Delivery:
    return Delivery(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=message.get("Body", ""),
        attributes=message.get("MessageAttributes", {}),
        receive_count=int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
        queue_name=queue_name,
    )


def _uploaded_job_id(body: dict) -> str | None:
    """The job an S3 `ObjectCreated` notification for an API upload belongs to."""
    records = body.get("Records")
    if not isinstance(records, list):
        return None
    for record in records:
        try:
            key = unquote_plus(record["s3"]["object"]["key"])
        except (KeyError, TypeError):
            continue
        job_id = job_id_from_upload_key(key)
        if job_id is not None:
            return job_id
    return None
