"""Fixtures that run real parts: moto's AWS server over HTTP, the whole stack as
supervised processes, real media made with ffmpeg and espeak-ng."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from schizodot import samples, stack
from shared.aws import sync_client
from shared.dynamo import from_item
from shared.settings import CommonSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningStack:
    config: stack.StackConfig
    settings: CommonSettings

    @property
    def api(self) -> str:
        return self.config.api_url

    def client(self, service: str) -> Any:
        return sync_client(self.settings, service)

    def env(self) -> dict[str, str]:
        return self.config.environment()

    def pids(self) -> dict[str, dict]:
        import json

        return json.loads((self.config.state_dir / "pids.json").read_text())

    # -- the clinic app's path ---------------------------------------------
    def submit(self, path: Path, patient_id: str, content_type: str = "video/mp4") -> str:
        with httpx.Client(timeout=30) as http:
            created = http.post(f"{self.api}/api/v1/analyze", json={
                "patient_id": patient_id, "filename": path.name, "content_type": content_type})
            assert created.status_code == 201, created.text
            job = created.json()
            uploaded = http.put(job["upload_url"], content=path.read_bytes(), headers=job["upload_headers"])
            assert uploaded.status_code == 200, uploaded.text
        return job["job_id"]

    def job(self, job_id: str) -> dict[str, Any] | None:
        response = self.client("dynamodb").get_item(
            TableName=self.settings.jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)
        return from_item(response["Item"]) if "Item" in response else None

    def wait_for_job(self, job_id: str, timeout: float = 180, progress_log: list | None = None) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job is not None:
                if progress_log is not None:
                    progress_log.append(job.get("progress", 0))
                if job["status"] in ("completed", "failed"):
                    return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish in {timeout} s: {self.job(job_id)}")

    def user_items(self, patient_id: str) -> list[dict[str, Any]]:
        response = self.client("dynamodb").query(
            TableName=self.settings.users_table, KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": patient_id}})
        return [from_item(item) for item in response["Items"]]

    def queue_url(self, name: str) -> str:
        return self.client("sqs").get_queue_url(QueueName=name)["QueueUrl"]

    def drain_dead_letters(self, stage: str, wait: float = 0) -> list[dict]:
        sqs = self.client("sqs")
        url = self.queue_url(self.settings.dead_letter_queue_name(stage))
        found: list[dict] = []
        deadline = time.monotonic() + wait
        while True:
            response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                           MessageAttributeNames=["All"])
            for message in response.get("Messages", []):
                found.append(message)
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
            if found or time.monotonic() >= deadline:
                return found


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory) -> RunningStack:
    """The embedded stack as `make up` runs it, on free ports, with short
    visibility timeouts and few retries so redelivery tests run in seconds."""
    config = stack.StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"),
        aws_port=free_port(),
        api_port=free_port(),
        extra_env={
            "SCHIZODOT_VISIBILITY_TIMEOUT_SECONDS": "8",
            "SCHIZODOT_MAX_RECEIVE_COUNT": "3",
            "SCHIZODOT_RETRY_BACKOFF_SECONDS": "1",
            "SCHIZODOT_SHUTDOWN_GRACE_SECONDS": "20",
        },
    )
    stack.up(config, timeout=240)
    settings = CommonSettings(
        aws_endpoint_url=config.endpoint, aws_region="us-east-1", max_receive_count=3, visibility_timeout_seconds=8
    )
    try:
        yield RunningStack(config, settings)
    finally:
        stack.down(config)


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_credentials():
    import os

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        os.environ.setdefault(key, value)


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def checkin_clip(media_dir) -> Path:
    """A real face photo speaking, 6 s, with sound."""
    return samples.checkin_video(media_dir / "checkin.mp4", seconds=6.0,
                                 text="Good morning. I feel fine today and I took my tablet.")


@pytest.fixture(scope="session")
def aws_server():
    """moto's server in this process, on a free port: for adapter tests."""
    from moto.server import ThreadedMotoServer

    from shared.infra import ensure_infrastructure

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    settings = CommonSettings(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_region="us-east-1")
    ensure_infrastructure(settings)
    yield settings
    server.stop()
