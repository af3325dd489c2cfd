"""At-least-once delivery: a worker killed mid-stage, a graceful stop, a poison message."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from schizodot import samples
from shared.aws.dynamo import to_item
from shared.domain.checkin import artifact_key, utc_now
from shared.domain.job import Job
from shared.runtime.events import MODALITY_ANALYSED, ModalityAnalysed, encode_event
from shared.runtime.messaging import ERROR_ATTRIBUTE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def long_clip(media_dir):
    return samples.checkin_video(media_dir / "long.mp4", seconds=40.0, width=640, height=480)


def _wait_for_stage(running_stack, job_id: str, stage: str, state: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = running_stack.job(job_id)
        record = Job.from_item(job).pipeline.stages.get(stage) if job else None
        if record is not None and record.state == state:
            return job
        time.sleep(0.1)
    raise AssertionError(f"{stage} never reached {state}")


def _wait_for_vision_progress(running_stack, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = running_stack.job(job_id)
        vision = Job.from_item(job).pipeline.stages.get("vision") if job else None
        if vision is not None and vision.state == "running" and vision.credited > 0:
            return
        assert vision is None or vision.state != "done", "vision finished before it could be killed"
        time.sleep(0.05)
    raise AssertionError("vision never reported progress")


def _kill_and_wait_for_restart(running_stack, service: str, signum: int) -> None:
    before = running_stack.pids()[service]
    os.kill(before["pid"], signum)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = running_stack.pids()[service]
        if now["pid"] != before["pid"]:
            return
        time.sleep(0.2)
    raise AssertionError(f"{service} was not restarted")


def test_worker_killed_mid_stage_is_redelivered_and_job_completes_once(running_stack, long_clip):
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    job_id = running_stack.submit(long_clip, patient)
    _wait_for_vision_progress(running_stack, job_id)  # it has credited progress: mid-analysis
    _kill_and_wait_for_restart(running_stack, "vision", signal.SIGKILL)

    progress: list[int] = []
    job = running_stack.wait_for_job(job_id, timeout=240, progress_log=progress)
    assert job["status"] == "completed", job.get("error")
    assert progress == sorted(progress)
    vision = Job.from_item(job).pipeline.stages["vision"]
    assert vision.attempts == 2, vision  # the same message, delivered again after the kill
    assert len(running_stack.user_items(patient)) == 1


def test_sigterm_lets_the_worker_finish_or_release_its_message(running_stack, long_clip):
    """SIGTERM is not SIGKILL: the worker exits 0 after finishing its message within the
    grace period (one attempt) or releasing it for redelivery at once (visibility 0, logged
    by the stopping process; a second attempt), never leaving it to its visibility timeout."""
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    job_id = running_stack.submit(long_clip, patient)
    _wait_for_vision_progress(running_stack, job_id)  # mid-analysis: a message is in flight
    logs = running_stack.config.state_dir / "logs"
    supervisor_lines = len((logs / "supervisor.log").read_text(errors="replace").splitlines())
    vision_log_offset = (logs / "vision.log").stat().st_size
    _kill_and_wait_for_restart(running_stack, "vision", signal.SIGTERM)

    exits = [line for line in (logs / "supervisor.log").read_text(errors="replace").splitlines()[supervisor_lines:]
             if line.startswith("vision exited with")]
    assert exits and exits[0].startswith("vision exited with 0;"), exits  # a clean exit, not killed by the signal
    with open(logs / "vision.log", "rb") as log:
        log.seek(vision_log_offset)
        after_the_signal = log.read().decode(errors="replace")
    released = any("released unfinished message for redelivery" in line and job_id in line
                   for line in after_the_signal.splitlines())
    job = running_stack.wait_for_job(job_id, timeout=240)
    assert job["status"] == "completed", job.get("error")
    vision = Job.from_item(job).pipeline.stages["vision"]
    # released: delivered once more; not released: it must have finished within the grace period
    assert vision.attempts == (2 if released else 1), (released, vision)
    assert len(running_stack.user_items(patient)) == 1


def test_poison_message_is_dead_lettered_and_its_job_failed(running_stack):
    """A fusion notice whose artifact is gone fails on every try: after the
    allowed receives the job fails with the reason and the message is kept."""
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    now = utc_now()
    running_stack.client("dynamodb").put_item(TableName=running_stack.settings.jobs_table, Item=to_item({
        "job_id": job_id, "patient_id": "patient-poison", "status": "processing", "s3_key": "uploads/x",
        "filename": "x.mp4", "content_type": "video/mp4", "created_at": now, "updated_at": now, "progress": 80,
        "metadata": {"pipeline": {"expected": ["audio"], "weights": {"ingest": 10, "audio": 70, "fusion": 10},
                                  "stages": {"audio": {"state": "done", "message_id": "m", "credited": 70,
                                                       "attempts": 1,
                                                       "outputs": {"artifact_key": artifact_key(job_id, "audio")}}}}},
    }))
    body = encode_event(MODALITY_ANALYSED, "urn:test", job_id, ModalityAnalysed(job_id=job_id, modality="audio"))
    sqs = running_stack.client("sqs")
    sqs.send_message(QueueUrl=running_stack.queue_url(running_stack.settings.queue_name("fusion")), MessageBody=body)

    job = running_stack.wait_for_job(job_id, timeout=90)
    assert job["status"] == "failed"
    assert "the fusion stage failed 3 times" in job["error"] and "NoSuchKey" in job["error"]
    deadline = time.monotonic() + 30
    dead = []
    while not dead and time.monotonic() < deadline:
        dead = [m for m in running_stack.drain_dead_letters("fusion") if job_id in m["Body"]]
    assert dead and "NoSuchKey" in dead[0]["MessageAttributes"][ERROR_ATTRIBUTE]["StringValue"]
