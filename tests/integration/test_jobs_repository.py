"""The job lifecycle rules, against moto's server over HTTP."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone


from services.results.handlers import sweep_stuck_jobs
from services.results.settings import ResultsSettings
from shared.aws import AsyncClients
from shared.jobs import ClaimOutcome, JobsRepository, plan_weights


def _job(job_id: str, patient: str = "patient-001", updated_at: str | None = None) -> dict:
    now = updated_at or datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {"job_id": job_id, "patient_id": patient, "status": "queued", "s3_key": "uploads/k", "filename": "a.mp4",
            "content_type": "video/mp4", "created_at": now, "updated_at": now, "progress": 0,
            "message": "Waiting for the upload", "metadata": {"pipeline": {"stages": {}}}}


def run(coro):
    return asyncio.run(coro)


async def _with_jobs(settings, body):
    async with AsyncClients(settings) as aws:
        return await body(JobsRepository(aws.dynamodb, settings.jobs_table))


def test_create_is_idempotent(aws_server):
    async def body(jobs):
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        assert await jobs.create(_job(job_id)) is True
        assert await jobs.create(_job(job_id)) is False
        return await jobs.get(job_id)

    job = run(_with_jobs(aws_server, body))
    assert job["status"] == "queued" and job["metadata"] == {"pipeline": {"stages": {}}}


def test_stage_claims_resume_same_message_and_refuse_duplicates(aws_server):
    async def body(jobs):
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        await jobs.create(_job(job_id))
        first = await jobs.claim_stage(job_id, "ingest", "message-1", "checking")
        again = await jobs.claim_stage(job_id, "ingest", "message-1", "checking")  # redelivered after a crash
        duplicate = await jobs.claim_stage(job_id, "ingest", "message-2", "checking")
        assert await jobs.finish_stage(again, "checked", {"size_bytes": 1}, {"expected": ["audio"]})
        assert not await jobs.finish_stage(first, "checked", {})  # already done: no second credit
        done = await jobs.claim_stage(job_id, "ingest", "message-3", "checking")
        missing = await jobs.claim_stage("job-000000000000", "ingest", "m", "x")
        return first, again, duplicate, done, missing, await jobs.get(job_id)

    first, again, duplicate, done, missing, job = run(_with_jobs(aws_server, body))
    assert first.outcome is ClaimOutcome.CLAIMED and again.outcome is ClaimOutcome.CLAIMED
    assert again.stage_state["attempts"] == 2
    assert duplicate.outcome is ClaimOutcome.TAKEN
    assert done.outcome is ClaimOutcome.ALREADY_DONE
    assert missing.outcome is ClaimOutcome.NO_SUCH_JOB
    assert job["status"] == "processing" and job["started_at"]
    assert job["progress"] == 10  # the ingest share, credited once
    assert job["metadata"]["pipeline"]["expected"] == ["audio"]


def test_progress_is_monotonic_across_parallel_stages_and_ends_at_100_only_on_completion(aws_server):
    async def body(jobs):
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        await jobs.create(_job(job_id))
        ingest = await jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
        await jobs.finish_stage(ingest, "x", {}, {"weights": plan_weights(["audio", "vision"]),
                                                  "expected": ["audio", "vision"]})
        audio = await jobs.claim_stage(job_id, "audio", "m-audio", "x")
        vision = await jobs.claim_stage(job_id, "vision", "m-vision", "x")
        seen = []
        await asyncio.gather(jobs.report_progress(audio, 0.5, "half"), jobs.report_progress(vision, 0.5, "half"))
        seen.append((await jobs.get(job_id))["progress"])
        await jobs.report_progress(vision, 0.25, "going back")  # lower fractions never subtract
        await jobs.report_progress(vision, 1.0, "all frames")  # stays below the stage share until finished
        seen.append((await jobs.get(job_id))["progress"])
        await asyncio.gather(jobs.finish_stage(audio, "done", {}), jobs.finish_stage(vision, "done", {}))
        seen.append((await jobs.get(job_id))["progress"])
        fusion = await jobs.claim_stage(job_id, "fusion", "m-fusion", "x")
        await jobs.finish_stage(fusion, "done", {})
        seen.append((await jobs.get(job_id))["progress"])
        results = await jobs.claim_stage(job_id, "results", "m-results", "x")
        await jobs.complete(results, {"risk_level": "low"}, "done")
        seen.append((await jobs.get(job_id))["progress"])
        return seen

    seen = run(_with_jobs(aws_server, body))
    assert seen == [10 + 12 + 22, 10 + 12 + 44, 80, 90, 100]


def test_finished_jobs_never_change(aws_server):
    async def body(jobs):
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        await jobs.create(_job(job_id))
        ingest = await jobs.claim_stage(job_id, "ingest", "m", "x")
        assert await jobs.fail(job_id, "the file is empty (0 bytes)", "ingest")
        assert not await jobs.fail(job_id, "another reason")
        assert not await jobs.report_progress(ingest, 0.9, "late")
        assert not await jobs.finish_stage(ingest, "late", {})
        late = await jobs.claim_stage(job_id, "audio", "m2", "x")
        return late, await jobs.get(job_id)

    late, job = run(_with_jobs(aws_server, body))
    assert late.outcome is ClaimOutcome.JOB_FINISHED
    assert job["status"] == "failed" and job["error"] == "the file is empty (0 bytes)"
    assert job["progress"] == 0 and job["completed_at"]


def test_patient_jobs_newest_first_with_status_filter(aws_server):
    patient = f"patient-{uuid.uuid4().hex[:8]}"

    async def body(jobs):
        base = datetime(2026, 1, 1, tzinfo=timezone.utc)
        ids = []
        for day in range(5):
            job = _job(f"job-{uuid.uuid4().hex[:12]}", patient)
            job["created_at"] = (base + timedelta(days=day)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            await jobs.create(job)
            ids.append(job["job_id"])
        await jobs.fail(ids[1], "bad")
        return ids, await jobs.list_for_patient(patient, limit=3), await jobs.list_for_patient(patient, status="failed")

    ids, newest, failed = run(_with_jobs(aws_server, body))
    assert [j["job_id"] for j in newest] == [ids[4], ids[3], ids[2]]
    assert [j["job_id"] for j in failed] == [ids[1]]


def test_sweeper_fails_jobs_that_stopped_making_progress(aws_server):
    settings = ResultsSettings(aws_endpoint_url=aws_server.aws_endpoint_url, stuck_after_seconds=600)
    old = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    async def body(jobs):
        stuck_upload = f"job-{uuid.uuid4().hex[:12]}"
        stuck_processing = f"job-{uuid.uuid4().hex[:12]}"
        fresh = f"job-{uuid.uuid4().hex[:12]}"
        await jobs.create(_job(stuck_upload, updated_at=old))
        await jobs.create({**_job(stuck_processing, updated_at=old), "status": "processing",
                           "message": "Vision: analysed 40/120 frames"})
        await jobs.create(_job(fresh))
        swept = await sweep_stuck_jobs(jobs, settings)
        return stuck_upload, stuck_processing, fresh, swept, {j: await jobs.get(j) for j in (stuck_upload, stuck_processing, fresh)}

    stuck_upload, stuck_processing, fresh, swept, jobs = run(_with_jobs(aws_server, body))
    assert {stuck_upload, stuck_processing} <= set(swept) and fresh not in swept
    assert "upload did not arrive within 10 min" in jobs[stuck_upload]["error"]
    assert "no progress for 10 min (last step: Vision: analysed 40/120 frames)" in jobs[stuck_processing]["error"]
    assert jobs[fresh]["status"] == "queued"


def test_two_deliveries_of_one_message_never_credit_a_stage_twice(aws_server):
    """A lapsed visibility can hand the same message to a second worker while the
    first still runs: both resume the claim, yet the stage's share counts once."""

    async def body(jobs):
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        await jobs.create(_job(job_id))
        ingest = await jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
        await jobs.finish_stage(ingest, "x", {}, {"weights": plan_weights(["audio", "vision"]),
                                                  "expected": ["audio", "vision"]})
        first = await jobs.claim_stage(job_id, "vision", "m-vision", "x")
        await jobs.report_progress(first, 0.2, "a fifth")
        second = await jobs.claim_stage(job_id, "vision", "m-vision", "x")  # same message, second worker
        await jobs.report_progress(second, 0.9, "nearly done")
        await jobs.report_progress(first, 0.5, "half (stale view)")
        finished_first = await jobs.finish_stage(first, "done", {})
        finished_second = await jobs.finish_stage(second, "done", {})
        return finished_first, finished_second, await jobs.get(job_id)

    finished_first, finished_second, job = run(_with_jobs(aws_server, body))
    assert finished_first and not finished_second
    assert job["progress"] == 10 + 45  # ingest + vision, each once
    assert job["metadata"]["pipeline"]["stages"]["vision"]["credited"] == 45
