"""The stage runner on in-memory fakes: claim, resume, duplicates, store, finish,
announce, re-announce, and the failures it leaves to the consumer."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from shared.domain.checkin import artifact_key, artifacts_prefix, utc_now
from shared.domain.errors import InputError, MalformedMessage
from shared.domain.job import Job, PipelinePlan, new_job, plan_weights
from shared.fakes import FakeAdapters, deliver
from shared.runtime.events import AnalysisRequested, FusionCompleted, ModalityAnalysed, encode_event
from shared.runtime.runner import Emit, Stage, StageOutcome, Work, parse_stage_event


class Calls:
    """A handler for the audio stage that records what it got."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.works: list[Work] = []
        self.fail = fail

    async def __call__(self, work: Work[AnalysisRequested], deps: object) -> StageOutcome:
        self.works.append(work)
        await work.progress(0.5, "Audio: half way")
        if self.fail is not None:
            error, self.fail = self.fail, None  # fails once
            raise error
        return StageOutcome(message="Audio analysis done", artifact={"speech_detected": True},
                            outputs={"compute_seconds": 0.5},
                            emit=(Emit("fusion", ModalityAnalysed(job_id=work.event.job_id, modality="audio")),))


def _stage(handler, ready=None) -> Stage:
    return Stage(name="audio", parse=parse_stage_event(AnalysisRequested), handle=handler,
                 claim_message="Audio: starting", ready=ready)


def _request(job_id: str) -> str:
    return encode_event(AnalysisRequested.TYPE, "urn:schizodot:ingest", job_id,
                        AnalysisRequested(job_id=job_id))


async def _ingested(fakes: FakeAdapters, modalities=("audio", "vision")) -> str:
    """A job ingest has planned: the point where audio's message arrives."""
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    await fakes.jobs.create(new_job(job_id, patient_id="patient-001", s3_key="uploads/p/x.mp4", filename="x.mp4",
                                    content_type="video/mp4", created_at=utc_now(), message="queued", source="api"))
    run = await fakes.jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
    await fakes.jobs.finish_stage(run, "x", {}, PipelinePlan(expected=list(modalities),
                                                             weights=plan_weights(list(modalities))))
    return job_id


def test_a_claimed_stage_runs_stores_its_artifact_finishes_and_announces():
    fakes, handler = FakeAdapters(), Calls()

    async def scenario():
        job_id = await _ingested(fakes)
        accepted = await deliver(fakes.runner(_stage(handler), None), _request(job_id))
        return job_id, accepted, await fakes.jobs.get(job_id)

    job_id, accepted, job = asyncio.run(scenario())
    [work] = handler.works
    assert work.event == AnalysisRequested(job_id=job_id)
    assert work.job.pipeline.stages["audio"].state == "running" and work.stage == "audio"
    assert accepted.job_id == job_id  # the runner knows the job from the event; no handler says it
    record = job.pipeline.stages["audio"]
    assert record.state == "done" and record.credited == 25 and job.progress == 10 + 25
    assert record.outputs.artifact_key == artifact_key(job_id, "audio") and record.outputs.compute_seconds == 0.5
    assert asyncio.run(fakes.storage.get_json(artifact_key(job_id, "audio"))) == {"speech_detected": True}
    assert fakes.publisher.sent == [("fusion", ModalityAnalysed(job_id=job_id, modality="audio"))]
    assert [(a.to, a.type, a.data) for a in record.announced] == [
        ("fusion", ModalityAnalysed.TYPE, {"job_id": job_id, "modality": "audio"})]
    assert job.message == "Audio analysis done"


def test_a_duplicate_message_finds_the_stage_taken_and_changes_nothing():
    fakes, handler = FakeAdapters(), Calls()

    async def scenario():
        job_id = await _ingested(fakes)
        await fakes.jobs.claim_stage(job_id, "audio", "m-first", "Audio: starting")  # the first one still runs
        await deliver(fakes.runner(_stage(handler), None), _request(job_id), message_id="m-duplicate")
        return await fakes.jobs.get(job_id)

    job = asyncio.run(scenario())
    assert handler.works == [] and fakes.publisher.sent == []
    assert job.pipeline.stages["audio"].message_id == "m-first"


def test_a_message_for_a_done_stage_re_sends_what_the_stage_announced_and_runs_nothing():
    fakes, handler = FakeAdapters(), Calls()

    async def scenario():
        job_id = await _ingested(fakes)
        runner = fakes.runner(_stage(handler), None)
        await deliver(runner, _request(job_id), message_id="m-1")
        await deliver(runner, _request(job_id), message_id="m-2")  # at-least-once: the request again
        return job_id

    job_id = asyncio.run(scenario())
    assert len(handler.works) == 1
    assert fakes.publisher.sent == [("fusion", ModalityAnalysed(job_id=job_id, modality="audio"))] * 2


def test_the_same_message_after_its_delivery_died_resumes_the_stage():
    fakes, handler = FakeAdapters(), Calls(fail=RuntimeError("the worker lost its model session"))

    async def scenario():
        job_id = await _ingested(fakes)
        runner = fakes.runner(_stage(handler), None)
        with pytest.raises(RuntimeError, match="model session"):
            await deliver(runner, _request(job_id), message_id="m-1")
        between = await fakes.jobs.get(job_id)
        await deliver(runner, _request(job_id), message_id="m-1", receive_count=2)
        return between, await fakes.jobs.get(job_id)

    between, job = asyncio.run(scenario())
    assert between.pipeline.stages["audio"].state == "running" and between.status == "processing"
    assert len(handler.works) == 2 and job.pipeline.stages["audio"].attempts == 2
    assert job.pipeline.stages["audio"].state == "done" and job.progress == 10 + 25  # its share once
    assert len(fakes.publisher.sent) == 1


def test_finished_or_missing_jobs_run_nothing():
    fakes, handler = FakeAdapters(), Calls()

    async def scenario():
        job_id = await _ingested(fakes)
        await fakes.jobs.fail(job_id, "the file is empty (0 bytes)", "ingest")
        runner = fakes.runner(_stage(handler), None)
        await deliver(runner, _request(job_id))
        await deliver(runner, _request("job-000000000000"))

    asyncio.run(scenario())
    assert handler.works == [] and fakes.publisher.sent == []


def test_failures_are_left_to_the_consumer_with_the_job_they_concern():
    fakes = FakeAdapters()

    async def scenario():
        job_id = await _ingested(fakes)
        runner = fakes.runner(_stage(Calls(fail=InputError("the file has no audio track"))), None)
        with pytest.raises(InputError, match="no audio track"):
            await deliver(runner, _request(job_id))
        malformed = await runner.accept(_delivery("not an event"))
        with pytest.raises(MalformedMessage, match="not JSON"):
            await malformed.work()
        wrong = await runner.accept(_delivery(encode_event(FusionCompleted.TYPE, "urn:x", job_id,
                                                           FusionCompleted(job_id=job_id))))
        with pytest.raises(MalformedMessage, match="unexpected event type"):
            await wrong.work()
        return job_id, malformed, await fakes.jobs.get(job_id)

    job_id, malformed, job = asyncio.run(scenario())
    assert job.status == "processing"  # the consumer fails it (tests/unit/test_consumer.py)
    assert malformed.job_id is None


def test_a_stage_that_is_not_ready_acknowledges_the_message_without_claiming():
    fakes, handler = FakeAdapters(), Calls()
    seen: list[Job] = []

    def ready(event: AnalysisRequested, job: Job) -> bool:
        seen.append(job)
        return False

    async def scenario():
        job_id = await _ingested(fakes)
        await deliver(fakes.runner(_stage(handler, ready), None), _request(job_id))
        return await fakes.jobs.get(job_id)

    job = asyncio.run(scenario())
    assert handler.works == [] and "audio" not in job.pipeline.stages and len(seen) == 1


def test_a_stage_may_send_only_where_the_topology_says():
    fakes = FakeAdapters()

    async def astray(work: Work[AnalysisRequested], deps: object) -> StageOutcome:
        return StageOutcome(message="x", emit=(Emit("results", FusionCompleted(job_id=work.event.job_id)),))

    async def scenario():
        job_id = await _ingested(fakes)
        with pytest.raises(ValueError, match="does not send to results"):
            await deliver(fakes.runner(_stage(astray), None), _request(job_id))
        return await fakes.jobs.get(job_id)

    job = asyncio.run(scenario())
    assert fakes.publisher.sent == [] and job.pipeline.stages["audio"].state == "running"


def test_the_last_stage_completes_the_job_with_its_results():
    fakes = FakeAdapters()

    async def complete(work: Work[FusionCompleted], deps: object) -> StageOutcome:
        return StageOutcome(message="Analysis completed successfully", job_results={"risk_level": "low"})

    async def scenario():
        job_id = await _ingested(fakes, ("audio",))
        stage = Stage(name="results", parse=parse_stage_event(FusionCompleted), handle=complete,
                      claim_message="Saving the results")
        await deliver(fakes.runner(stage, None), encode_event(FusionCompleted.TYPE, "urn:x", job_id,
                                                              FusionCompleted(job_id=job_id)))
        return await fakes.jobs.get(job_id)

    job = asyncio.run(scenario())
    assert job.status == "completed" and job.progress == 100 and job.results == {"risk_level": "low"}
    assert job.pipeline.stages["results"].state == "done" and job.message == "Analysis completed successfully"


def test_a_stage_reports_progress_within_its_share():
    fakes = FakeAdapters()
    progress: list[int] = []

    async def halfway(work: Work[AnalysisRequested], deps: object) -> StageOutcome:
        await work.progress(0.5, "Audio: half way")
        progress.append((await fakes.jobs.get(work.job.job_id)).progress)
        return StageOutcome(message="done")

    async def scenario():
        job_id = await _ingested(fakes)
        await deliver(fakes.runner(_stage(halfway), None), _request(job_id))

    asyncio.run(scenario())
    assert progress == [10 + 12]  # ingest's 10, and half of audio's 25 (rounded down)


def _delivery(body: str):
    from shared.runtime.messaging import Delivery

    return Delivery("m-x", "r-x", body, {}, 1, "schizodot-audio")


@pytest.mark.parametrize("ending", ["failed", "erased"])
def test_a_job_that_ends_while_its_stage_works_gets_no_artifact_and_nothing_is_announced(ending):
    """An erasure fails the patient's running jobs, then deletes them: a stage that finishes later must
    not write an artifact the erasure and its late sweep have already looked for (issue 24)."""
    fakes = FakeAdapters()

    async def ends_meanwhile(work: Work[AnalysisRequested], deps: object) -> StageOutcome:
        await fakes.jobs.fail(work.job.job_id, "the patient's data was erased", "erasure", reason="other")
        if ending == "erased":
            await fakes.jobs.delete(work.job.job_id)
        return StageOutcome(message="Audio analysis done", artifact={"speech_detected": True},
                            emit=(Emit("fusion", ModalityAnalysed(job_id=work.event.job_id, modality="audio")),))

    async def scenario():
        job_id = await _ingested(fakes)
        await deliver(fakes.runner(_stage(ends_meanwhile), None), _request(job_id))
        return job_id

    job_id = asyncio.run(scenario())
    assert asyncio.run(fakes.storage.list_keys(artifacts_prefix(job_id))) == []
    assert fakes.publisher.sent == []
