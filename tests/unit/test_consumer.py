"""The consumer settles every outcome of a delivery, on a stand-in SQS client and
the in-memory job store: done is deleted, a malformed message is dead-lettered
with its reason, bad input fails the job at once, anything else is retried with
back-off until the last allowed receive fails the job and dead-letters the message."""

from __future__ import annotations

import asyncio
import time
import uuid

from shared.domain.checkin import utc_now
from shared.domain.errors import InputError
from shared.domain.job import PipelinePlan, new_job, plan_weights
from shared.fakes import FakeAdapters
from shared.runtime.events import AnalysisRequested, encode_event
from shared.runtime.messaging import ERROR_ATTRIBUTE, QueueConsumer
from shared.runtime.runner import Stage, StageOutcome, Work, parse_stage_event
from shared.settings import CommonSettings


class StandInSqs:
    """Just what the consumer calls on SQS, recorded."""

    def __init__(self, messages: list[dict]) -> None:
        self.waiting = list(messages)
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []
        self.sent: list[tuple[str, str, dict]] = []

    async def receive_message(self, *, MaxNumberOfMessages: int, **_):
        batch, self.waiting = self.waiting[:MaxNumberOfMessages], self.waiting[MaxNumberOfMessages:]
        if not batch:
            await asyncio.sleep(0.01)
        return {"Messages": batch}

    async def delete_message(self, *, ReceiptHandle: str, **_):
        self.deleted.append(ReceiptHandle)

    async def change_message_visibility(self, *, ReceiptHandle: str, VisibilityTimeout: int, **_):
        self.visibility.append((ReceiptHandle, VisibilityTimeout))

    async def send_message(self, *, QueueUrl: str, MessageBody: str, MessageAttributes: dict):
        self.sent.append((QueueUrl, MessageBody, MessageAttributes))
        return {"MessageId": "dead-letter-1"}

    def settled(self) -> int:
        return len(self.deleted) + len(self.visibility)


class RecordedFailures:
    """The job store, noting why each job was failed."""

    def __init__(self, jobs) -> None:
        self._jobs = jobs
        self.reasons: list[tuple[str, str]] = []

    def __getattr__(self, name):
        return getattr(self._jobs, name)

    async def fail(self, job_id, error, stage=None, *, reason="other"):
        self.reasons.append((job_id, reason))
        return await self._jobs.fail(job_id, error, stage, reason=reason)


def _settle(body: str, outcome: Exception | None, receive_count: int = 1):
    """One message through the consumer and an audio stage whose handler ends with `outcome`."""
    fakes = FakeAdapters()
    jobs = RecordedFailures(fakes.jobs)
    job_id = f"job-{uuid.uuid4().hex[:12]}"

    async def handle(work: Work[AnalysisRequested], deps: object) -> StageOutcome:
        if outcome is not None:
            raise outcome
        return StageOutcome(message="done")

    async def scenario():
        await fakes.jobs.create(new_job(job_id, patient_id="patient-001", s3_key="uploads/p/x.mp4", filename="x.mp4",
                                        content_type="video/mp4", created_at=utc_now(), message="q", source="api"))
        run = await fakes.jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
        await fakes.jobs.finish_stage(run, "x", {}, PipelinePlan(expected=["audio"], weights=plan_weights(["audio"])))
        sqs = StandInSqs([{"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": body.replace("JOB", job_id),
                           "Attributes": {"ApproximateReceiveCount": str(receive_count),
                                          "SentTimestamp": str(int(time.time() * 1000))},
                           "MessageAttributes": {}}])
        stage = Stage(name="audio", parse=parse_stage_event(AnalysisRequested), handle=handle, claim_message="x")
        await _consume(sqs, jobs, fakes.runner(stage, None))
        return sqs, await fakes.jobs.get(job_id)

    sqs, job = asyncio.run(scenario())
    return sqs, job, jobs.reasons


async def _consume(sqs: StandInSqs, jobs, handler) -> None:
    """The audio queue's consumer, until every message is settled."""
    consumer = QueueConsumer(sqs=sqs, jobs=jobs, stage="audio", queue_url="https://sqs/q/schizodot-audio",
                             dead_letter_url="https://sqs/q/schizodot-audio-dlq", handler=handler,
                             settings=CommonSettings(max_receive_count=3, retry_backoff_seconds=5))
    stop = asyncio.Event()
    running = asyncio.create_task(consumer.run(stop))
    while not sqs.settled():
        await asyncio.sleep(0.01)
    stop.set()
    await running


REQUEST = encode_event(AnalysisRequested.TYPE, "urn:schizodot:ingest", "JOB",
                       AnalysisRequested(job_id="JOB"))


def test_a_handled_message_is_deleted():
    sqs, job, failed = _settle(REQUEST, None)
    assert sqs.deleted == ["r-1"] and sqs.sent == [] and failed == []
    assert job.pipeline.stages["audio"].state == "done"


def test_a_malformed_message_is_dead_lettered_with_its_reason():
    sqs, job, failed = _settle('{"specversion": "1.0", broken', None)
    [(url, body, attributes)] = sqs.sent
    assert url.endswith("-dlq") and body.startswith('{"specversion"')
    assert "not JSON" in attributes[ERROR_ATTRIBUTE]["StringValue"]
    assert attributes["schizodot_source_queue"]["StringValue"] == "schizodot-audio"
    assert sqs.deleted == ["r-1"] and failed == [] and job.status == "processing"


def test_bad_input_fails_the_job_at_once_and_is_not_retried():
    sqs, job, failed = _settle(REQUEST, InputError("the file has no audio track"))
    assert job.status == "failed" and job.error == "the file has no audio track"
    assert job.message == "Analysis failed in audio: the file has no audio track"
    assert failed == [(job.job_id, "input")] and sqs.deleted == ["r-1"] and sqs.visibility == []


def test_a_transient_failure_is_retried_with_back_off():
    sqs, job, failed = _settle(REQUEST, ConnectionError("S3 did not answer"), receive_count=2)
    assert sqs.visibility == [("r-1", 10)]  # 5 s, doubled for the second receive
    assert sqs.deleted == [] and failed == [] and job.status == "processing"


def test_the_last_allowed_receive_fails_the_job_and_keeps_the_message():
    sqs, job, failed = _settle(REQUEST, ConnectionError("S3 did not answer"), receive_count=3)
    assert job.status == "failed"
    assert job.error == "the audio stage failed 3 times; last error: ConnectionError: S3 did not answer"
    assert failed == [(job.job_id, "retries_exhausted")]
    [(url, _body, attributes)] = sqs.sent
    assert url.endswith("-dlq") and "S3 did not answer" in attributes[ERROR_ATTRIBUTE]["StringValue"]
    assert sqs.deleted == ["r-1"]


def test_a_stage_that_cannot_even_read_the_delivery_is_retried_like_any_failure():
    class Unreadable:
        async def accept(self, delivery):
            raise ConnectionError("DynamoDB did not answer")

    async def scenario():
        sqs = StandInSqs([{"MessageId": "m-1", "ReceiptHandle": "r-1", "Body": "{}",
                           "Attributes": {"ApproximateReceiveCount": "1"}, "MessageAttributes": {}}])
        await _consume(sqs, FakeAdapters().jobs, Unreadable())
        return sqs

    sqs = asyncio.run(scenario())
    assert sqs.visibility == [("r-1", 5)] and sqs.deleted == []
