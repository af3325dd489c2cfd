"""The job lifecycle rules: the jobs repository's contract, run against the
in-memory fake and against DynamoDB (moto's server over HTTP), so the fake the
fast tests use cannot drift from the real adapter."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services.results.settings import ResultsSettings
from services.results.stage.handlers import sweep_stuck_jobs
from shared.aws.clients import AsyncClients
from shared.aws.jobs import JobsRepository
from shared.domain.job import ClaimOutcome, Job, PipelinePlan, plan_weights
from shared.fakes import InMemoryJobs
from tests.conftest import CONTRACT_CASES, fake_or_real


def _job(job_id: str, patient: str = "patient-001", updated_at: str | None = None, **fields) -> Job:
    now = updated_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return Job.from_item({
        "job_id": job_id, "patient_id": patient, "status": "queued", "s3_key": "uploads/k", "filename": "a.mp4",
        "content_type": "video/mp4", "created_at": now, "updated_at": now, "progress": 0,
        "message": "Waiting for the upload", "metadata": {"pipeline": {"stages": {}}}, **fields})


def _new_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


async def _ingested(jobs) -> str:
    """A new job as ingest leaves it: audio and vision to analyse."""
    job_id = _new_id()
    await jobs.create(_job(job_id))
    ingest = await jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
    await jobs.finish_stage(ingest, "x", {}, PipelinePlan(weights=plan_weights(["audio", "vision"]),
                                                          expected=["audio", "vision"]))
    return job_id


@pytest.fixture(params=CONTRACT_CASES)
def with_jobs(request):
    """Runs `body(jobs)` on a job store: the in-memory fake, or the repository on moto."""
    return fake_or_real(request, InMemoryJobs, lambda settings, aws: JobsRepository(aws.dynamodb, settings.jobs_table))


def test_create_is_idempotent(with_jobs):
    async def body(jobs):
        job_id = _new_id()
        assert await jobs.create(_job(job_id)) is True
        assert await jobs.create(_job(job_id, message="a second, different job")) is False
        return await jobs.get(job_id)

    job = with_jobs(body)
    assert job.status == "queued" and job.to_item()["metadata"] == {"pipeline": {"stages": {}}}
    assert job.message == "Waiting for the upload"


def test_stage_claims_resume_same_message_and_refuse_duplicates(with_jobs):
    async def body(jobs):
        job_id = _new_id()
        await jobs.create(_job(job_id))
        first = await jobs.claim_stage(job_id, "ingest", "message-1", "checking")
        again = await jobs.claim_stage(job_id, "ingest", "message-1", "checking")  # redelivered after a crash
        duplicate = await jobs.claim_stage(job_id, "ingest", "message-2", "checking")
        assert await jobs.finish_stage(again, "checked", {"size_bytes": 1}, PipelinePlan(expected=["audio"]))
        assert not await jobs.finish_stage(first, "checked", {})  # already done: no second credit
        done = await jobs.claim_stage(job_id, "ingest", "message-3", "checking")
        missing = await jobs.claim_stage("job-000000000000", "ingest", "m", "x")
        assert await jobs.get("job-000000000000") is None  # a claim (written without a read) makes no job
        return first, again, duplicate, done, missing, await jobs.get(job_id)

    first, again, duplicate, done, missing, job = with_jobs(body)
    assert first.outcome is ClaimOutcome.CLAIMED and again.outcome is ClaimOutcome.CLAIMED
    assert again.record.attempts == 2
    assert duplicate.outcome is ClaimOutcome.TAKEN
    assert done.outcome is ClaimOutcome.ALREADY_DONE
    assert missing.outcome is ClaimOutcome.NO_SUCH_JOB
    assert job.status == "processing" and job.started_at
    assert job.progress == 10  # the ingest share, credited once
    assert job.pipeline.expected == ["audio"]
    assert job.pipeline.stages["ingest"].outputs.size_bytes == 1


def test_a_claim_from_a_known_job_reads_nothing_more_and_decides_the_same(with_jobs):
    async def body(jobs):
        job_id = _new_id()
        await jobs.create(_job(job_id))
        known = await jobs.get(job_id)
        first = await jobs.claim_stage(job_id, "ingest", "m-1", "x", known=known)
        stale = await jobs.claim_stage(job_id, "ingest", "m-2", "x", known=known)  # the snapshot is out of date
        return first, stale

    first, stale = with_jobs(body)
    assert first.outcome is ClaimOutcome.CLAIMED and first.job.status == "processing"
    assert stale.outcome is ClaimOutcome.TAKEN


def test_progress_is_monotonic_across_parallel_stages_and_ends_at_100_only_on_completion(with_jobs):
    async def body(jobs):
        job_id = await _ingested(jobs)
        audio = await jobs.claim_stage(job_id, "audio", "m-audio", "x")
        vision = await jobs.claim_stage(job_id, "vision", "m-vision", "x")
        seen = []
        await asyncio.gather(jobs.report_progress(audio, 0.5, "half"), jobs.report_progress(vision, 0.5, "half"))
        seen.append((await jobs.get(job_id)).progress)
        await jobs.report_progress(vision, 0.25, "going back")  # lower fractions never subtract
        await jobs.report_progress(vision, 1.0, "all frames")  # stays below the stage share until finished
        seen.append((await jobs.get(job_id)).progress)
        await asyncio.gather(jobs.finish_stage(audio, "done", {}), jobs.finish_stage(vision, "done", {}))
        seen.append((await jobs.get(job_id)).progress)
        fusion = await jobs.claim_stage(job_id, "fusion", "m-fusion", "x")
        await jobs.finish_stage(fusion, "done", {})
        seen.append((await jobs.get(job_id)).progress)
        results = await jobs.claim_stage(job_id, "results", "m-results", "x")
        await jobs.complete(results, {"risk_level": "low"}, "done")
        seen.append((await jobs.get(job_id)).progress)
        return seen, await jobs.get(job_id)

    seen, job = with_jobs(body)
    assert seen == [10 + 12 + 22, 10 + 12 + 44, 80, 90, 100]
    assert job.status == "completed" and job.results == {"risk_level": "low"} and job.completed_at
    assert job.pipeline.done("results")


def test_finished_jobs_never_change(with_jobs):
    async def body(jobs):
        job_id = _new_id()
        await jobs.create(_job(job_id))
        ingest = await jobs.claim_stage(job_id, "ingest", "m", "x")
        assert await jobs.fail(job_id, "the file is empty (0 bytes)", "ingest")
        assert not await jobs.fail(job_id, "another reason")
        assert not await jobs.report_progress(ingest, 0.9, "late")
        assert not await jobs.finish_stage(ingest, "late", {})
        assert not await jobs.complete(ingest, {}, "late")
        late = await jobs.claim_stage(job_id, "audio", "m2", "x")
        return late, await jobs.get(job_id)

    late, job = with_jobs(body)
    assert late.outcome is ClaimOutcome.JOB_FINISHED
    assert job.status == "failed" and job.error == "the file is empty (0 bytes)"
    assert job.message == "Analysis failed in ingest: the file is empty (0 bytes)"
    assert job.progress == 0 and job.completed_at


def test_patient_jobs_newest_first_with_status_filter(with_jobs):
    patient = f"patient-{uuid.uuid4().hex[:8]}"

    async def body(jobs):
        base = datetime(2026, 1, 1, tzinfo=timezone.utc)
        ids = []
        for day in range(5):
            created = (base + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            job = _job(_new_id(), patient, created_at=created)
            await jobs.create(job)
            ids.append(job.job_id)
        await jobs.fail(ids[1], "bad")
        return ids, await jobs.list_for_patient(patient, limit=3), await jobs.list_for_patient(patient, status="failed")

    ids, newest, failed = with_jobs(body)
    assert [j.job_id for j in newest] == [ids[4], ids[3], ids[2]]
    assert [j.job_id for j in failed] == [ids[1]]


def test_sweeper_fails_jobs_that_stopped_making_progress(with_jobs):
    settings = ResultsSettings(stuck_after_seconds=600)
    old = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    async def body(jobs):
        stuck_upload, stuck_processing, fresh = _new_id(), _new_id(), _new_id()
        await jobs.create(_job(stuck_upload, updated_at=old))
        await jobs.create(_job(stuck_processing, updated_at=old, status="processing",
                               message="Vision: analysed 40/120 frames"))
        await jobs.create(_job(fresh))
        swept = await sweep_stuck_jobs(jobs, settings)
        return stuck_upload, stuck_processing, fresh, swept, {j: await jobs.get(j) for j in
                                                             (stuck_upload, stuck_processing, fresh)}

    stuck_upload, stuck_processing, fresh, swept, jobs = with_jobs(body)
    assert {stuck_upload, stuck_processing} <= set(swept) and fresh not in swept
    assert "upload did not arrive within 10 min" in jobs[stuck_upload].error
    assert "no progress for 10 min (last step: Vision: analysed 40/120 frames)" in jobs[stuck_processing].error
    assert jobs[fresh].status == "queued"


def test_two_deliveries_of_one_message_never_credit_a_stage_twice(with_jobs):
    """A lapsed visibility can hand the same message to a second worker while the
    first still runs: both resume the claim, yet the stage's share counts once."""

    async def body(jobs):
        job_id = await _ingested(jobs)
        first = await jobs.claim_stage(job_id, "vision", "m-vision", "x")
        await jobs.report_progress(first, 0.2, "a fifth")
        second = await jobs.claim_stage(job_id, "vision", "m-vision", "x")  # same message, second worker
        await jobs.report_progress(second, 0.9, "nearly done")
        await jobs.report_progress(first, 0.5, "half (stale view)")
        finished_first = await jobs.finish_stage(first, "done", {})
        finished_second = await jobs.finish_stage(second, "done", {})
        return finished_first, finished_second, await jobs.get(job_id)

    finished_first, finished_second, job = with_jobs(body)
    assert finished_first and not finished_second
    assert job.progress == 10 + 45  # ingest + vision, each once
    assert job.pipeline.stages["vision"].credited == 45


def test_a_finished_stage_keeps_its_outputs_and_what_it_announced(with_jobs):
    from shared.domain.job import Announcement

    async def body(jobs):
        job_id = _new_id()
        await jobs.create(_job(job_id))
        run = await jobs.claim_stage(job_id, "ingest", "m", "x")
        sent = [Announcement(to="audio", type="org.schizodot.analysis.requested.v1",
                             data={"job_id": job_id, "bucket": "b", "s3_key": "uploads/k"})]
        await jobs.finish_stage(run, "checked", {"compute_seconds": 0.25}, PipelinePlan(bucket="b"), sent)
        return job_id, await jobs.claim_stage(job_id, "ingest", "m-again", "x")

    job_id, again = with_jobs(body)
    assert again.outcome is ClaimOutcome.ALREADY_DONE
    assert again.record.outputs.compute_seconds == 0.25 and again.job.pipeline.bucket == "b"
    assert [a.data for a in again.record.announced] == [{"job_id": job_id, "bucket": "b", "s3_key": "uploads/k"}]


# --- a write whose response was lost is retried, and the retry meets its own first attempt ---------


class RetriedWrites:
    """A DynamoDB client whose writes reach the table and are then sent again, as
    botocore retries a request whose response was lost: the caller gets what the
    second attempt got (for a conditional write, usually ConditionalCheckFailed)."""

    def __init__(self, client) -> None:
        self._client = client
        self.retried = 0

    def __getattr__(self, name):
        return getattr(self._client, name)

    async def update_item(self, **request):
        await self._client.update_item(**request)
        self.retried += 1
        return await self._client.update_item(**request)

    async def put_item(self, **request):
        await self._client.put_item(**request)
        self.retried += 1
        return await self._client.put_item(**request)


@pytest.mark.server
def test_every_conditional_write_that_landed_counts_as_done_when_its_retry_is_refused(aws_server):
    from services.results.stage.writer import ResultsWriter

    async def body(aws):
        client = RetriedWrites(aws.dynamodb)
        jobs = JobsRepository(client, aws_server.jobs_table)
        job_id = _new_id()
        created = await jobs.create(_job(job_id))
        ingest = await jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
        finished_ingest = await jobs.finish_stage(ingest, "x", {}, PipelinePlan(
            weights=plan_weights(["audio"]), expected=["audio"]))
        audio = await jobs.claim_stage(job_id, "audio", "m-audio", "x")
        resumed = await jobs.claim_stage(job_id, "audio", "m-audio", "x")  # its earlier delivery died
        progressed = await jobs.report_progress(resumed, 0.5, "half")
        after_progress = (await jobs.get(job_id), resumed.credited)
        finished_audio = await jobs.finish_stage(resumed, "done", {})
        results = await jobs.claim_stage(job_id, "results", "m-results", "x")
        completed = await jobs.complete(results, {"risk_level": "low"}, "done")
        other = _new_id()
        await jobs.create(_job(other))
        failed = await jobs.fail(other, "the file is empty (0 bytes)", "ingest")
        item = {"user_id": f"patient-{uuid.uuid4().hex[:8]}", "timestamp": "2026-01-01T00:00:00.000000Z",
                "job_id": job_id, "results": {"x": 1.5}}
        saved = await ResultsWriter(client, aws_server.users_table).save(item)
        # Writes that really conflict are still refused through the same client.
        refused = (await jobs.create(_job(job_id, message="another")), await jobs.fail(other, "again"),
                   await ResultsWriter(client, aws_server.users_table).save({**item, "job_id": other}))
        return (created, ingest, finished_ingest, audio, resumed, progressed, after_progress, finished_audio,
                completed, failed, saved, refused, client.retried, await jobs.get(job_id), await jobs.get(other))

    (created, ingest, finished_ingest, audio, resumed, progressed, after_progress, finished_audio, completed,
     failed, saved, refused, retried, job, other) = asyncio.run(_on_aws(aws_server, body))
    assert retried >= 10  # every write above was sent twice
    assert created and finished_ingest and progressed and finished_audio and completed and failed and saved
    assert ingest.outcome is audio.outcome is resumed.outcome is ClaimOutcome.CLAIMED
    assert audio.record.attempts == 1 and resumed.record.attempts == 2  # one per delivery, not per request
    assert after_progress[0].progress == 10 + 35 and after_progress[1] == 35  # half of the 70 audio points, once
    assert job.status == "completed" and job.progress == 100
    assert job.pipeline.stages["audio"].credited == 70 and job.pipeline.stages["ingest"].credited == 10
    assert other.status == "failed" and other.error == "the file is empty (0 bytes)"
    assert refused == (False, False, False)


async def _on_aws(settings, body):
    async with AsyncClients(settings) as aws:
        return await body(aws)


def test_a_timeline_is_kept_only_on_a_job_still_waiting_for_its_recording(with_jobs):
    timeline = [{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
                {"step_id": "show_pill", "kind": "dosing", "shown_at_ms": 4200}]

    async def body(jobs):
        waiting, started = _new_id(), _new_id()
        await jobs.create(_job(waiting))
        await jobs.create(_job(started))
        await jobs.claim_stage(started, "ingest", "m-1", "checking")
        kept = await jobs.record_timeline(waiting, timeline)
        again = await jobs.record_timeline(waiting, timeline)  # a retried request: the same answer
        refused = await jobs.record_timeline(started, timeline)
        missing = await jobs.record_timeline("job-000000000000", timeline)
        return kept, again, refused, missing, await jobs.get(waiting), await jobs.get(started)

    kept, again, refused, missing, waiting, started = with_jobs(body)
    assert (kept, again, refused, missing) == (True, True, False, False)
    assert waiting.pipeline.timeline == timeline and waiting.to_item()["metadata"]["pipeline"]["timeline"] == timeline
    assert started.pipeline.timeline is None
