"""The embedded stack as `make up` runs it, with its data on disk: the APIs
answer through a process restart, a SIGKILLed AWS server loses no job,
`make down && make up` keeps a patient's history, every process SIGKILLed at once
mid-analysis is survived, and `make reset` wipes the data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest

from schizodot import samples, stack
from shared.domain.job import Job
from shared.settings import CommonSettings
from tests.conftest import RunningStack, free_port

pytestmark = pytest.mark.slow
SHARED: dict[str, str] = {}  # the patient whose jobs the AWS-kill test completed: the history later tests read


@pytest.fixture(scope="module")
def durable_stack(tmp_path_factory):
    config = stack.StackConfig(
        state_dir=tmp_path_factory.mktemp("durable-stack"), aws_port=free_port(), api_port=free_port(),
        results_api_port=free_port(), replicas={"ingest": 2},
        extra_env={"SCHIZODOT_VISIBILITY_TIMEOUT_SECONDS": "8", "SCHIZODOT_RETRY_BACKOFF_SECONDS": "1",
                   "SCHIZODOT_SHUTDOWN_GRACE_SECONDS": "10"},
    )
    stack.up(config, timeout=300)
    settings = CommonSettings(aws_endpoint_url=config.endpoint, aws_region="us-east-1", visibility_timeout_seconds=8)
    try:
        yield RunningStack(config, settings)
    finally:
        stack.down(config)


def _cli(running: RunningStack, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, **running.env(), "PYTHONPATH": str(stack.REPO_ROOT)}
    return subprocess.run([sys.executable, "-m", "schizodot.cli", *args], capture_output=True, text=True,
                          env=env, timeout=timeout)


def _start_cli(running: RunningStack, clip, patient: str) -> subprocess.Popen:
    env = {**os.environ, **running.env(), "PYTHONPATH": str(stack.REPO_ROOT)}
    return subprocess.Popen([sys.executable, "-m", "schizodot.cli", "submit", str(clip), "--patient-id", patient,
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _kill(running: RunningStack, name: str) -> int:
    pid = running.pids()[name]["pid"]
    os.kill(pid, signal.SIGKILL)
    return pid


def _wait_restarted(running: RunningStack, name: str, old_pid: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if running.pids().get(name, {}).get("pid") not in (None, old_pid):
            return
        time.sleep(0.2)
    raise AssertionError(f"{name} was not restarted")


def test_the_ingest_api_answers_while_one_of_its_processes_restarts(durable_stack):
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def hammer() -> None:
        nonlocal answered
        with httpx.Client(timeout=30) as http:
            while not stop.is_set():
                try:
                    response = http.get(f"{durable_stack.api}/health")
                    if response.status_code != 200:
                        failures.append(str(response.status_code))
                    answered += 1
                except httpx.TransportError as error:  # a connection the killed process held
                    failures.append(type(error).__name__)

    worker = threading.Thread(target=hammer)
    worker.start()
    time.sleep(1)
    old = _kill(durable_stack, "ingest")
    time.sleep(4)
    stop.set()
    worker.join()
    _wait_restarted(durable_stack, "ingest", old)
    # At most the one request the killed process was serving fails; never a refused connection.
    assert answered > 50 and len(failures) <= 1 and "ConnectError" not in failures, failures


def test_aws_server_killed_mid_run_every_job_completes(durable_stack, media_dir):
    clips = [samples.checkin_video(media_dir / "aws-kill-video.mp4", seconds=8.0),
             samples.checkin_video(media_dir / "aws-kill-audio.m4a", seconds=8.0, with_video=False),
             samples.checkin_video(media_dir / "aws-kill-silent.mp4", seconds=8.0, with_audio=False)]
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    clients = [_start_cli(durable_stack, clips[i % 3], patient) for i in range(4)]
    deadline = time.monotonic() + 120
    while not any(job["status"] == "processing" for job in _jobs(durable_stack, patient)):
        assert time.monotonic() < deadline, "no job started"
        time.sleep(0.2)
    old = _kill(durable_stack, "aws")
    _wait_restarted(durable_stack, "aws", old)
    for client in clients:
        out, err = client.communicate(timeout=400)
        assert client.returncode == 0 and "Traceback" not in err, err[-2000:]
    jobs = _jobs(durable_stack, patient)
    assert sorted(job["status"] for job in jobs) == ["completed"] * 4
    items = durable_stack.user_items(patient)
    assert sorted(item["job_id"] for item in items) == sorted(job["job_id"] for job in jobs)
    SHARED["patient"] = patient


def test_down_and_up_keep_a_patients_history(durable_stack):
    patient = SHARED.get("patient")
    if patient is None:
        pytest.fail("needs the jobs of test_aws_server_killed_mid_run_every_job_completes")
    before = {item["job_id"] for item in durable_stack.user_items(patient)}
    stack.down(durable_stack.config)  # make down
    stack.up(durable_stack.config, timeout=300)  # make up
    shown = _cli(durable_stack, "results", "--patient-id", patient, "--limit", "10")
    assert shown.returncode == 0, shown.stderr
    assert before and all(job_id in shown.stdout for job_id in before)
    listed = json.loads(_cli(durable_stack, "jobs", "--patient-id", patient, "--json").stdout)
    assert {job["job_id"]: job["status"] for job in listed} == {job_id: "completed" for job_id in before}


def test_every_process_sigkilled_at_once_mid_analysis_is_redelivered_after_the_restart(durable_stack, media_dir):
    """Every process is SIGKILLed at once (supervisor included); after `make up`
    the message that was in flight is delivered again and its job completes, once.
    (A SIGKILL leaves the OS's page cache intact: this is not a power cut, which
    only losing unsynced writes would test.)"""
    clip = samples.checkin_video(media_dir / "power-cut.mp4", seconds=30.0, width=640, height=480)
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    job_id = durable_stack.submit(clip, patient)
    deadline = time.monotonic() + 120
    while True:
        vision = ((durable_stack.job(job_id) or {}).get("metadata", {}).get("pipeline", {})
                  .get("stages", {}).get("vision", {}))
        if vision.get("state") == "running":
            break
        assert vision.get("state") != "done" and time.monotonic() < deadline, vision
        time.sleep(0.1)
    pids = durable_stack.pids()
    for info in pids.values():
        try:
            os.kill(info["pid"], signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(1)
    stack.up(durable_stack.config, timeout=300)
    job = durable_stack.wait_for_job(job_id, timeout=300)
    assert job["status"] == "completed", job.get("error")
    assert Job.from_item(job).pipeline.stages["vision"].attempts == 2  # the same message, again
    assert len(durable_stack.user_items(patient)) == 1


def test_the_cli_rides_out_restarts_of_the_api_and_the_aws_server(durable_stack, media_dir):
    """Every ingest process and the AWS server are SIGKILLed while `schizodot
    submit` follows its job: it waits, keeps following and prints the result."""
    clip = samples.checkin_video(media_dir / "cli-restarts.mp4", seconds=20.0)
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    client = _start_cli(durable_stack, clip, patient)
    deadline = time.monotonic() + 120
    while not any(job["status"] == "processing" for job in _jobs(durable_stack, patient)):
        assert time.monotonic() < deadline and client.poll() is None, "the job never started"
        time.sleep(0.2)
    killed = {name: _kill(durable_stack, name) for name in ("ingest", "ingest-2", "aws")}
    for name, pid in killed.items():
        _wait_restarted(durable_stack, name, pid)
    out, err = client.communicate(timeout=400)
    assert client.returncode == 0 and "Traceback" not in err, err[-3000:]
    assert json.loads(out)["user_id"] == patient
    assert "progress 100% completed" in err  # it kept following to the end


def test_reset_wipes_the_data(durable_stack):
    stack.reset(durable_stack.config)  # make reset: stops the stack, deletes the data
    assert not stack.is_running(durable_stack.config)
    assert not durable_stack.config.aws_data_dir.exists()
    stack.up(durable_stack.config, timeout=300)
    patient = SHARED.get("patient", "patient-none")
    assert durable_stack.user_items(patient) == []
    assert _jobs(durable_stack, patient) == []


def _jobs(running: RunningStack, patient: str) -> list[dict]:
    """The patient's jobs as stored (under the clinic's patient key), read from the AWS server itself."""
    from shared.aws.dynamo import from_item
    from shared.runtime.infra import PATIENT_JOBS_INDEX

    response = running.client("dynamodb").query(
        TableName=running.settings.jobs_table, IndexName=PATIENT_JOBS_INDEX,
        KeyConditionExpression="patient_id = :p", ExpressionAttributeValues={":p": {"S": running.stored_key(patient)}})
    return [from_item(item) for item in response["Items"]]
