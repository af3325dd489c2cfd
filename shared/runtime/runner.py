"""One stage runner: the lifecycle every stage shares, written once.

A stage is declared once (`Stage`): how its queue's messages read as typed
events (`parse`, at the edge), its handler, the job's message while it starts,
and, for fusion, what it waits for. The handler is a plain function of the work
(`Work`: the event, the job as claimed, a progress callback) and its injected
dependencies, returning a `StageOutcome`: the job's message, the artifact, the
events to send, the pipeline plan (ingest) or the job's results (the last stage).

For each event the runner
1. creates the job the event brings, if it brings one (an EHR check-in);
2. for a stage with a `ready` check, reads the job and acknowledges a message
   that arrives too early (the others claim at once: the claim returns the job);
3. claims the job's stage under the SQS message id (`JobStore.claim_stage`):
   the same message again resumes, another one finds the stage taken and stops,
   and one finding it done re-sends what the stage announced when it finished;
4. runs the handler, stores its artifact at `artifacts/<job>/<stage>.json`,
   finishes the stage (recording the artifact, the plan and the announcements
   in one conditional write) or completes the job, and sends the events.
Failures are the consumer's to settle (`shared.runtime.messaging`): an `InputError`
fails the job at once, anything else is retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from shared.aws.jobs import JobStore, StageRun
from shared.aws.storage import ObjectStore
from shared.domain.checkin import artifact_key
from shared.domain.errors import MalformedMessage
from shared.domain.job import Announcement, ClaimOutcome, Job, PipelinePlan
from shared.runtime.events import StageEvent, decode_event, event_data, tracing_carrier
from shared.runtime.messaging import Accepted, Delivery, EventPublisher
from shared.runtime.topology import CARRIES, check_route
from shared.runtime.tracing import job_trace_fields

log = structlog.get_logger()

E = TypeVar("E")
D = TypeVar("D")


@dataclass(frozen=True)
class Inbound(Generic[E]):
    """One typed event a message carries, and the job it is about."""

    job_id: str
    event: E
    new_job: Job | None = None  # the job this event creates (an EHR check-in), before the stage claims it
    event_id: str | None = None
    trace_carrier: dict[str, str] = field(default_factory=dict)  # the sender's, from the CloudEvent envelope
    trace_from_job: bool = False  # no context travels with it: continue the trace stored on the job


class JobIdCollision(MalformedMessage):
    """An event naming a job that is another clinic's or another patient's: dead-lettered, and
    the job it names is left as it is."""


def _collision(job_id: str) -> JobIdCollision:
    return JobIdCollision(f"the event names job {job_id}, which is another check-in's (another clinic or "
                          "patient); send the event again with a new id")


class RejectedEvent(MalformedMessage):
    """An event that cannot be read but names a patient: it is dead-lettered, and
    the job it would have made is recorded as failed so the sender can see why."""

    def __init__(self, reason: str, job: Job) -> None:
        super().__init__(reason)
        self.job = job


Parse = Callable[[str], Sequence[Inbound[E]]]


@dataclass(frozen=True)
class Emit:
    """An event for another stage's queue."""

    to: str
    event: StageEvent


@dataclass(frozen=True)
class StageOutcome:
    message: str  # the job's message once the stage is done
    artifact: dict[str, Any] | None = None  # stored at artifacts/<job>/<stage>.json, its key in the outputs
    outputs: dict[str, Any] = field(default_factory=dict)  # recorded on the stage (compute_seconds, ...)
    plan: PipelinePlan | None = None  # what the stages after this one do (ingest)
    emit: tuple[Emit, ...] = ()
    job_results: dict[str, Any] | None = None  # the job's results: this stage completes the job


@dataclass(frozen=True)
class Work(Generic[E]):
    """What a handler works on."""

    stage: str
    event: E
    job: Job  # as claimed
    progress: Callable[[float, str], Awaitable[None]]  # credit a fraction (0..1) of the stage's share
    final_attempt: bool  # a failure now fails the job


Handler = Callable[[Work[E], D], Awaitable[StageOutcome]]


@dataclass(frozen=True)
class Stage(Generic[E, D]):
    name: str
    parse: Parse[E]
    handle: Handler[E, D]
    claim_message: str  # the job's message while the stage starts
    # Checked on the job before claiming; False acknowledges the message without
    # running the stage (fusion: a modality still being analysed sends its own notice).
    ready: Callable[[E, Job], bool] | None = None


def parse_stage_event(model: type[StageEvent]) -> Parse[StageEvent]:
    """The parse of a queue that carries `model` from the stage before."""

    def parse(body: str) -> list[Inbound[StageEvent]]:
        event = decode_event(body)
        try:
            data = event_data(event, model)
        except MalformedMessage as error:
            error.trace_carrier = tracing_carrier(event)
            raise
        return [Inbound(data.job_id, data, event_id=event.get_id(), trace_carrier=tracing_carrier(event))]

    return parse


class StageRunner(Generic[E, D]):
    """Runs one stage for the consumer (`shared.runtime.messaging.MessageHandler`)."""

    def __init__(self, stage: Stage[E, D], deps: D, jobs: JobStore, storage: ObjectStore,
                 publisher: EventPublisher) -> None:
        self.stage = stage
        self.deps = deps
        self._jobs = jobs
        self._storage = storage
        self._publisher = publisher

    async def accept(self, delivery: Delivery) -> Accepted:
        try:
            inbounds = list(self.stage.parse(delivery.body))
        except MalformedMessage as error:
            return self._rejected(error)
        known: Job | None = None
        accepted = Accepted(work=lambda: self._run_all(inbounds, delivery, accepted, known))
        if inbounds:
            first = inbounds[0]
            accepted.job_id = first.job_id
            accepted.trace_carrier, accepted.trace_origin = first.trace_carrier, "cloudevent"
            if first.trace_from_job:  # read once: for the trace now, and as the job the claim starts from
                known = await self._job_for_trace(first.job_id)
                stored = known.pipeline.trace_context if known else None
                accepted.trace_carrier, accepted.trace_origin = stored or {}, "job"
        return accepted

    def _rejected(self, error: MalformedMessage) -> Accepted:
        job = error.job if isinstance(error, RejectedEvent) else None

        async def reject() -> None:
            if job is not None:  # exists already on redelivery; fail() is a no-op then
                if not await self._jobs.create(job.with_trace(job_trace_fields())):
                    existing = await self._jobs.get(job.job_id)
                    if existing is not None and not existing.same_checkin(job):
                        raise _collision(job.job_id) from error  # never fail another clinic's job
                await self._jobs.fail(job.job_id, f"the check-in event was rejected: {error}", self.stage.name,
                                      reason="input")
            raise error

        return Accepted(work=reject, job_id=job.job_id if job else None,
                        trace_carrier=error.trace_carrier, trace_origin="cloudevent")

    async def _job_for_trace(self, job_id: str) -> Job | None:
        try:
            return await self._jobs.get(job_id)
        except Exception:  # tracing must never stop the work; the stage will meet the error
            log.warning("could not read the job's trace context", job_id=job_id, exc_info=True)
            return None

    async def _run_all(self, inbounds: list[Inbound[E]], delivery: Delivery, accepted: Accepted,
                       known: Job | None = None) -> None:
        for inbound in inbounds:
            accepted.job_id = inbound.job_id  # a failure fails this one
            with structlog.contextvars.bound_contextvars(job_id=inbound.job_id):
                await self.run(inbound, delivery, known if known and known.job_id == inbound.job_id else None)

    async def run(self, inbound: Inbound[E], delivery: Delivery, known: Job | None = None) -> None:
        """One event through the stage (`known`: the job as just read)."""
        stage = self.stage
        if inbound.new_job is not None:
            job = inbound.new_job.with_trace(job_trace_fields())
            created = await self._jobs.create(job)
            known = job if created else await self._jobs.get(inbound.job_id)
            if known is not None and not known.same_checkin(job):
                log.error("check-in event names another check-in's job; dead-lettered", event_id=inbound.event_id)
                raise _collision(inbound.job_id)
            log.info("check-in event accepted", new_job=created, event_id=inbound.event_id)
        job = known
        if job is None and stage.ready is not None:  # only a stage that waits for others reads the job first
            job = await self._jobs.get(inbound.job_id)
            if job is None:
                log.info("stage not run", outcome=ClaimOutcome.NO_SUCH_JOB.value)
                return
        if job is not None and job.active and stage.ready is not None and not stage.ready(inbound.event, job):
            return
        # Without a job read, the claim is written at once and the job comes back with it (JobStore.claim_stage).
        run = await self._jobs.claim_stage(inbound.job_id, stage.name, delivery.message_id, stage.claim_message,
                                           known=job)
        if run.outcome is ClaimOutcome.ALREADY_DONE:
            await self._announce_again(run)  # an earlier delivery may have died before sending them
            return
        if run.outcome is not ClaimOutcome.CLAIMED or run.job is None:
            log.info("stage not run", outcome=run.outcome.value)
            return

        async def progress(fraction: float, message: str) -> None:
            await self._jobs.report_progress(run, fraction, message)

        outcome = await stage.handle(Work(stage.name, inbound.event, run.job, progress, delivery.final_attempt),
                                     self.deps)
        for emit in outcome.emit:
            check_route(stage.name, emit.to, emit.event)
        outputs = dict(outcome.outputs)
        if outcome.artifact is not None:
            # A job that ended while the stage worked (failed, or its patient erased) gets nothing more: an
            # artifact written now would outlive the erasure and its late sweep (services/results/erasure/).
            current = await self._jobs.get(inbound.job_id)
            if current is None or not current.active:
                log.info("stage output dropped: the job ended while the stage ran")
                return
            key = artifact_key(inbound.job_id, stage.name)
            await self._storage.put_json(key, outcome.artifact)
            outputs["artifact_key"] = key
        if outcome.job_results is not None:
            await self._jobs.complete(run, outcome.job_results, outcome.message)
        else:
            announced = [Announcement(to=e.to, type=e.event.TYPE, data=e.event.model_dump(mode="json"))
                         for e in outcome.emit]
            await self._jobs.finish_stage(run, outcome.message, outputs, outcome.plan, announced)
        for emit in outcome.emit:
            await self._publisher.publish(emit.to, emit.event)

    async def _announce_again(self, run: StageRun) -> None:
        record = run.record
        saved = record.announced if record else []
        if not saved:
            log.info("stage already done; nothing it announced was saved", outcome=run.outcome.value)
        for announcement in saved:
            await self._publisher.publish(announcement.to, CARRIES[announcement.to].model_validate(announcement.data))
