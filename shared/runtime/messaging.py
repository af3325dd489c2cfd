"""SQS publishing and the consumer loop every stage runs.

The consumer long-polls, holds up to `concurrency` messages at once, extends a
message's visibility while its handler works (heartbeat), deletes it on success
and decides what a failure means:
- `MalformedMessage`: not a valid event; moved to the dead-letter queue with the
  reason, since no retry can fix it;
- `InputError`: the check-in cannot be analysed; the job fails with the
  message and the delivery is done;
- anything else: retried with back-off (the error's `retry_after_seconds` when it
  has one, else exponential); on the last allowed receive the job
  fails with the reason and the message is dead-lettered. The queue's
  RedrivePolicy stays as the safety net for workers that die on a message.
On stop (SIGTERM) it takes no new messages, lets in-flight ones finish within
the grace period and releases the rest for immediate redelivery.

What a message means is the stage's business (`shared.runtime.runner`): the consumer
hands each delivery to it once, gets back the job it is about, where its trace
continues and the work to do, and settles the outcome.

Tracing follows the OpenTelemetry messaging conventions: `publish <queue>`
PRODUCER spans, `process <queue>` CONSUMER spans that are children of the
producer's context and link to it. A message without trace context continues
the trace its sender started (CloudEvents distributed-tracing extension) or,
for an S3 upload notification, the trace stored on the job at creation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from shared.domain.errors import InputError, MalformedMessage
from shared.runtime.events import StageEvent, encode_event
from shared.runtime.logs import redact
from shared.runtime.metrics import MESSAGES_DEAD_LETTERED, MESSAGES_RETRIED, QUEUE_STATS, STAGE_DURATION
from shared.runtime.tracing import carrier_context, inject_message_attributes, message_trace_carrier
from shared.settings import CommonSettings

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
    final_attempt: bool = False  # received as often as the queue allows: a failure now is final


@dataclass
class Accepted:
    """A delivery as the stage read it: the job it is about (kept current while the
    work runs), where its trace continues when the message carries no context, and the work."""

    work: Callable[[], Awaitable[None]]
    job_id: str | None = None
    trace_carrier: dict[str, str] = field(default_factory=dict)
    trace_origin: str = "none"  # where trace_carrier came from: "cloudevent" or "job"


class MessageHandler(Protocol):
    async def accept(self, delivery: Delivery) -> Accepted:
        """Read the delivery once; errors in it are raised by the work, inside its span."""


class EventPublisher(Protocol):
    async def publish(self, stage: str, event: StageEvent) -> str:
        """Send `event` to `stage`'s queue; returns the message id."""


class Publisher:
    """`EventPublisher` on SQS: CloudEvents to stage queues, with a producer span and trace context."""

    def __init__(self, sqs: Any, queue_urls: dict[str, str], source: str) -> None:
        self._sqs = sqs
        self._urls = queue_urls
        self._source = source

    async def publish(self, stage: str, event: StageEvent) -> str:
        job_id = event.job_id
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
                MessageBody=encode_event(event.TYPE, self._source, job_id, event),
                MessageAttributes=inject_message_attributes(),
            )
            span.set_attribute("messaging.message.id", response["MessageId"])
            return response["MessageId"]


class FailsJobs(Protocol):
    """All the consumer asks of the job store: fail a job whose message cannot be processed.

    Declared here rather than imported, so the messaging layer does not depend on the job store's module."""

    async def fail(self, job_id: str, error: str, stage: str | None = None, *, reason: Any = ...) -> bool: ...


class QueueConsumer:
    def __init__(
        self,
        *,
        sqs: Any,
        jobs: FailsJobs,
        stage: str,
        queue_url: str,
        dead_letter_url: str,
        handler: MessageHandler,
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
                    delivery = _delivery(message, self._queue_name, self._settings.max_receive_count)
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
        accepted = await self._accept(delivery)
        parent, origin = self._parent_context(delivery, accepted)
        producer = trace.get_current_span(parent).get_span_context() if parent is not None else None
        # The messaging conventions ask for both: child of the producer, and a link to it.
        links = [Link(producer, {"schizodot.context_from": origin})] if producer is not None else []
        bound = {"stage": self._stage, "message_id": delivery.message_id}
        if accepted.job_id:
            bound["job_id"] = accepted.job_id
        with structlog.contextvars.bound_contextvars(**bound), \
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
                await accepted.work()
                await self._delete(delivery)
            except asyncio.CancelledError:
                outcome = "released"
                await asyncio.shield(self._release(delivery, accepted.job_id))
                raise
            except Exception as error:
                description = redact(f"{type(error).__name__}: {error}")
                span.add_event("exception", {"exception.type": type(error).__name__, "exception.message": description})
                span.set_status(Status(StatusCode.ERROR, description))
                try:
                    outcome = await self._settle_failure(delivery, error, accepted.job_id)
                except Exception:  # AWS unreachable: SQS redelivers after the visibility timeout
                    outcome = "retry"
                    log.exception("could not settle a failed message", job_id=accepted.job_id)
            finally:
                heartbeat.cancel()
                if accepted.job_id:
                    span.set_attribute("schizodot.job_id", accepted.job_id)
                seconds = time.monotonic() - started
                STAGE_DURATION.record(seconds, {"stage": self._stage, "outcome": outcome})
                log.debug("message handled", seconds=round(seconds, 3), outcome=outcome)

    async def _accept(self, delivery: Delivery) -> Accepted:
        try:
            return await self._handler.accept(delivery)
        except Exception as error:  # settled like any failure, inside the delivery's span
            failure = error  # `error` is unbound once the except block ends

            async def fail() -> None:
                raise failure

            return Accepted(work=fail)

    @staticmethod
    def _parent_context(delivery: Delivery, accepted: Accepted) -> tuple[Context | None, str]:
        """The trace a delivery continues, and where its context came from."""
        context = carrier_context(message_trace_carrier(delivery.attributes))
        if context is not None:
            return context, "message_attributes"
        context = carrier_context(accepted.trace_carrier)
        return (context, accepted.trace_origin) if context is not None else (None, "none")

    async def _settle_failure(self, delivery: Delivery, error: Exception, job_id: str | None) -> str:
        """Decide what a failure means; returns the outcome for the stage metrics."""
        if isinstance(error, MalformedMessage):
            log.warning("malformed message dead-lettered", reason=str(error))
            await self._dead_letter(delivery, str(error), "malformed")
            return "dead_lettered"
        if isinstance(error, InputError):
            log.info("check-in cannot be analysed", job_id=job_id, reason=str(error))
            if job_id:
                await self._jobs.fail(job_id, str(error), self._stage, reason="input")
            await self._delete(delivery)
            return "input_error"
        reason = f"{type(error).__name__}: {error}"  # transient until proven otherwise
        if delivery.final_attempt:
            log.error("giving up on message", job_id=job_id, attempts=delivery.receive_count, exc_info=error)
            if job_id:
                await self._jobs.fail(
                    job_id, f"the {self._stage} stage failed {delivery.receive_count} times; last error: {reason}",
                    self._stage, reason="retries_exhausted",
                )
            await self._dead_letter(delivery, reason, "retries_exhausted")
            return "dead_lettered"
        # A handler that knows better says when to try again (an alert's webhook back-off).
        asked = getattr(error, "retry_after_seconds", None)
        delay = asked if isinstance(asked, int) and 0 <= asked <= 43200 else min(
            self._settings.retry_backoff_seconds * 2 ** (delivery.receive_count - 1), 900)
        log.warning("handler failed; will retry", job_id=job_id, error=reason,
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

    async def _release(self, delivery: Delivery, job_id: str | None) -> None:
        try:
            await self._change_visibility(delivery, 0)
            log.info("released unfinished message for redelivery", job_id=job_id)
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


def _delivery(message: dict, queue_name: str, max_receive_count: int) -> Delivery:
    receive_count = int(message.get("Attributes", {}).get("ApproximateReceiveCount", "1"))
    return Delivery(
        message_id=message["MessageId"],
        receipt_handle=message["ReceiptHandle"],
        body=message.get("Body", ""),
        attributes=message.get("MessageAttributes", {}),
        receive_count=receive_count,
        queue_name=queue_name,
        final_attempt=receive_count >= max_receive_count,
    )
