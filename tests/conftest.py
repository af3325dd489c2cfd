"""Fixtures that run real parts: moto's AWS server over HTTP, the whole stack as
supervised processes, real media made with ffmpeg and espeak-ng."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from schizodot import samples, stack
from schizodot.dev_identity import DEV_CLINIC, DevIssuer
from schizodot.upload import upload_arguments
from shared.aws.clients import sync_client
from shared.aws.dynamo import from_item
from shared.identity.principal import patient_key
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

    @property
    def results_api(self) -> str:
        return f"http://127.0.0.1:{self.config.results_api_port}"

    def token(self, user: str = "dev-uploader", **claims: Any) -> str:
        """A real token signed by the stack's development issuer."""
        return DevIssuer(self.config.state_dir).mint(user, **claims)

    def auth(self, user: str = "dev-uploader") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(user)}"}

    # -- the clinic app's path ---------------------------------------------
    def submit(self, path: Path, patient_id: str, content_type: str = "video/mp4", user: str = "dev-uploader") -> str:
        with httpx.Client(timeout=30) as http:
            created = http.post(f"{self.api}/api/v1/analyze", headers=self.auth(user), json={
                "patient_id": patient_id, "filename": path.name, "content_type": content_type})
            assert created.status_code == 201, created.text
            job = created.json()
            uploaded = http.request(**upload_arguments(job, path.name, path.read_bytes(), content_type,
                                                       self.auth(user)))
            assert uploaded.status_code in (200, 201, 204), uploaded.text
        return job["job_id"]

    def stored_key(self, patient_id: str, clinic: str = DEV_CLINIC) -> str:
        """How a clinic's patient is stored (shared.identity.principal.patient_key)."""
        return patient_key(clinic, patient_id)

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

    def user_items(self, patient_id: str, clinic: str = DEV_CLINIC) -> list[dict[str, Any]]:
        response = self.client("dynamodb").query(
            TableName=self.settings.users_table, KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": patient_key(clinic, patient_id)}})
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


# Clinics of the browser tests (tests/browser/test_checkin_to_console.py): one whose rules raise an
# alert on every check-in, delivered to the test's webhook receiver, and one whose receiver answers 500.
E2E_CLINIC, FAILING_CLINIC = "e2e-clinic", "e2e-failing"
SPANISH_CLINIC, MALAY_CLINIC = "clinica-sur", "klinik-kl"


@pytest.fixture(scope="session")
def webhook_receiver():
    from tests.webhooks import WebhookReceiver

    receiver = WebhookReceiver(statuses={f"/hooks/{FAILING_CLINIC}": 500}).start()
    yield receiver
    receiver.stop()


def _clinics_file(folder: Path, receiver_url: str) -> Path:
    import json

    from tests.webhooks import SECRET_ENV

    def clinic(name: str, zone: str, slug: str) -> dict:
        return {"name": name, "timezone": zone, "alerts": {"risk_levels": ["low", "moderate", "high"]},
                "delivery": {"webhook": {"url": f"{receiver_url}/hooks/{slug}", "secret_env": SECRET_ENV,
                                         "timeout_seconds": 5}}}

    path = folder / "clinics.json"
    path.write_text(json.dumps({"default": {"timezone": "UTC"}, "clinics": {
        E2E_CLINIC: clinic("Browser Test Clinic", "Europe/Berlin", E2E_CLINIC),
        FAILING_CLINIC: clinic("Failing Receiver Clinic", "America/New_York", FAILING_CLINIC),
        # the languages their patients speak (services/audio/languages.py; tests/integration/test_languages_stack.py)
        SPANISH_CLINIC: {"name": "Clínica Sur", "timezone": "Europe/Madrid", "languages": ["es", "en"]},
        MALAY_CLINIC: {"name": "Klinik KL", "timezone": "Asia/Kuala_Lumpur", "languages": ["ms"]}}}))
    return path


EHR_TEST_QUEUE = "schizodot-test-ehr-inbox"


@pytest.fixture(scope="session")
def running_stack(tmp_path_factory, webhook_receiver) -> RunningStack:
    """The embedded stack as `make up` runs it, on free ports, with short
    visibility timeouts and few retries so redelivery tests run in seconds, and the
    browser tests' clinics (their alerts go to `webhook_receiver`, retried within seconds)."""
    from tests.webhooks import SECRET, SECRET_ENV

    state_dir = tmp_path_factory.mktemp("stack")
    aws_port = free_port()
    config = stack.StackConfig(
        state_dir=state_dir,
        aws_port=aws_port,
        api_port=free_port(),
        results_api_port=free_port(),
        extra_env={
            # the test's EHR: a queue the results service sends its FHIR events to (created below)
            "RESULTS_EHR_QUEUE_URL": f"http://127.0.0.1:{aws_port}/123456789012/{EHR_TEST_QUEUE}",
            "SCHIZODOT_VISIBILITY_TIMEOUT_SECONDS": "8",
            "SCHIZODOT_MAX_RECEIVE_COUNT": "3",
            "SCHIZODOT_RETRY_BACKOFF_SECONDS": "1",
            "SCHIZODOT_SHUTDOWN_GRACE_SECONDS": "20",
            "INGEST_CHECKINS_PER_WINDOW": "30",  # per credential and minute (tests/integration/test_access.py)
            "RESULTS_ERASURE_SWEEP_DELAY_SECONDS": "3",  # the erasure's late sweep, soon
            "SCHIZODOT_CLINICS_FILE": str(_clinics_file(state_dir, webhook_receiver.url)),
            SECRET_ENV: SECRET,
            "RESULTS_ALERT_RETRY_BASE_SECONDS": "2",
            "RESULTS_ALERT_RETRY_MAX_SECONDS": "4",
            # the patient page sends parts of 256 KiB (the AWS server's 5 MiB floor lowered), so a
            # recording of a few seconds goes in several
            "S3_UPLOAD_PART_MIN_SIZE": str(256 * 1024),
            "INGEST_PATIENT_PART_BYTES": str(256 * 1024),
        },
    )
    stack.up(config, timeout=240)
    settings = CommonSettings(
        aws_endpoint_url=config.endpoint, aws_region="us-east-1", max_receive_count=3, visibility_timeout_seconds=8
    )
    sync_client(settings, "sqs").create_queue(QueueName=EHR_TEST_QUEUE)  # before any check-in completes
    try:
        yield RunningStack(config, settings)
    finally:
        stack.down(config)


# A contract test runs each case against the in-memory fake and the real adapter on moto.
CONTRACT_CASES = ["memory", pytest.param("aws", marks=pytest.mark.server)]


def fake_or_real(request, make_fake, make_real):
    """What a contract test's fixture returns: a runner of `body(adapter)` on the fake, or on
    `make_real(settings, aws)` built from AWS clients on moto's server (`aws_server`)."""
    if request.param == "memory":
        adapter = make_fake()
        return lambda body: asyncio.run(body(adapter))
    settings = request.getfixturevalue("aws_server")

    async def on_aws(body):
        from shared.aws.clients import AsyncClients

        async with AsyncClients(settings) as aws:
            return await body(make_real(settings, aws))

    return lambda body: asyncio.run(on_aws(body))


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_credentials():
    if aws_target() == "aws":
        return  # the ambient credentials (profile, SSO, instance role) must win
    for key, value in {"AWS_ACCESS_KEY_ID": stack.AWS_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        os.environ.setdefault(key, value)
    # the stacks the tests start sign with the same secret, so these clients reach them too
    os.environ.setdefault(stack.AWS_SECRET_VARIABLE, os.environ["AWS_SECRET_ACCESS_KEY"])


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def checkin_clip(media_dir) -> Path:
    """A real face photo speaking, 6 s, with sound."""
    return samples.checkin_video(media_dir / "checkin.mp4", seconds=6.0,
                                 text="Good morning. I feel fine today and I took my tablet.")


def _atomic_moto_server_class():
    from moto.moto_server.threaded_moto_server import MotoRequestHandler, ThreadedMotoServer
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from werkzeug.serving import make_server

    from local_aws.app import AtomicDynamoDB
    from local_aws.moto_internals import one_event_per_multipart_completion

    class AtomicMotoServer(ThreadedMotoServer):
        """moto's threaded server with DynamoDB's requests applied one at a time, as AWS
        applies each atomically (local_aws.app.AtomicDynamoDB says why)."""

        def _server_entry(self) -> None:
            one_event_per_multipart_completion()  # as local_aws does: S3 sends one event per object
            app = AtomicDynamoDB(DomainDispatcherApplication(create_backend_app))
            self._server = make_server(self._ip_address, self._port, app, True, request_handler=MotoRequestHandler)
            self._server_ready_event.set()
            self._server.serve_forever()

    return AtomicMotoServer


def _AtomicMotoServer(**kwargs):  # noqa: N802 - a class made on first use (moto is imported lazily)
    return _atomic_moto_server_class()(**kwargs)


@pytest.fixture(scope="session")
def aws_server():
    """An AWS API with SchizoDot's queues, tables and bucket, for adapter tests.

    Which one is chosen by SCHIZODOT_TEST_AWS (see `aws_target`); by default
    moto's server in this process, on a free port.
    """
    from shared.runtime.infra import ensure_infrastructure

    target = aws_target()
    if target == "embedded":
        port = free_port()
        server = _AtomicMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        settings = CommonSettings(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_region="us-east-1")
        ensure_infrastructure(settings)
        yield settings
        server.stop()
    elif target == "aws":
        settings = _unique_aws_settings()
        ensure_infrastructure(settings)
        try:
            yield settings
        finally:
            remove_infrastructure(settings)
    else:
        with _aws_container(target) as endpoint:
            settings = CommonSettings(aws_endpoint_url=endpoint, aws_region="us-east-1")
            ensure_infrastructure(settings)
            yield settings


# --- choosing the AWS the adapter tests run against ----------------------------
#
# SCHIZODOT_TEST_AWS=embedded              moto's server in the test process (default)
# SCHIZODOT_TEST_AWS=moto-container        motoserver/moto through testcontainers (Docker)
# SCHIZODOT_TEST_AWS=localstack-container  LocalStack through testcontainers (Docker and
#                                          LOCALSTACK_AUTH_TOKEN)
# SCHIZODOT_TEST_AWS=aws                   real AWS with the ambient credentials; every
#                                          resource gets a unique name and is deleted after
# Images: SCHIZODOT_TEST_MOTO_IMAGE, SCHIZODOT_TEST_LOCALSTACK_IMAGE. The
# `running_stack` fixture always runs the embedded stack.

AWS_TARGETS = ("embedded", "moto-container", "localstack-container", "aws")
DEFAULT_MOTO_IMAGE = "motoserver/moto:5.2.5"
DEFAULT_LOCALSTACK_IMAGE = "localstack/localstack:4.13"


def aws_target() -> str:
    target = os.environ.get("SCHIZODOT_TEST_AWS", "embedded").strip().lower() or "embedded"
    if target not in AWS_TARGETS:
        raise pytest.UsageError(f"SCHIZODOT_TEST_AWS={target!r} is not one of: {', '.join(AWS_TARGETS)}")
    return target


@contextmanager
def _aws_container(target: str):
    """Start moto's or LocalStack's image and yield its endpoint URL."""
    try:
        from testcontainers.core.container import DockerContainer
    except ImportError:
        pytest.fail(f"SCHIZODOT_TEST_AWS={target} needs testcontainers: "
                    ".venv/bin/pip install 'testcontainers>=4.8'", pytrace=False)
    if target == "moto-container":
        image = os.environ.get("SCHIZODOT_TEST_MOTO_IMAGE", DEFAULT_MOTO_IMAGE)
        env, port, health = {"MOTO_PORT": "5000"}, 5000, "/moto-api/"
    else:
        token = os.environ.get("LOCALSTACK_AUTH_TOKEN", "")
        if not token:
            pytest.fail("SCHIZODOT_TEST_AWS=localstack-container needs LOCALSTACK_AUTH_TOKEN: LocalStack's "
                        "images require an account since 2026 (moto-container needs none)", pytrace=False)
        image = os.environ.get("SCHIZODOT_TEST_LOCALSTACK_IMAGE", DEFAULT_LOCALSTACK_IMAGE)
        env, port, health = {"LOCALSTACK_AUTH_TOKEN": token, "SERVICES": "sqs,dynamodb,s3"}, 4566, "/_localstack/health"
    try:  # the Docker client connects as soon as the container object is made
        container = DockerContainer(image).with_exposed_ports(port)
        for key, value in env.items():
            container.with_env(key, value)
        container.start()
    except Exception as error:  # docker.errors.DockerException and friends: no engine, no image
        pytest.fail(f"SCHIZODOT_TEST_AWS={target} needs a running Docker engine that can run {image}: {error}",
                    pytrace=False)
    try:
        endpoint = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(port)}"
        _wait_for_http(endpoint + health, timeout=120)
        yield endpoint
    finally:
        container.stop()


def _wait_for_http(url: str, timeout: float) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError as error:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not answer within {timeout:.0f} s: {error}") from error
            time.sleep(0.5)


def _unique_aws_settings() -> CommonSettings:
    """Names no one else uses, so a run never touches real SchizoDot data."""
    suffix = uuid.uuid4().hex[:10]
    return CommonSettings(
        aws_region=os.environ.get("AWS_REGION", os.environ.get("AWS_DEFAULT_REGION", "us-east-1")),
        jobs_table=f"SchizodotJobs-test-{suffix}",
        users_table=f"SchizodotUsers-test-{suffix}",
        bucket=f"schizodot-test-{suffix}",
        queue_prefix=f"schizodot-test-{suffix}-",
    )


def remove_infrastructure(settings: CommonSettings) -> None:
    """Delete what ensure_infrastructure made for `settings` (the aws target's clean-up)."""
    from shared.runtime.topology import STAGES

    sqs = sync_client(settings, "sqs")
    for stage in STAGES:
        for name in (settings.queue_name(stage), settings.dead_letter_queue_name(stage)):
            try:
                sqs.delete_queue(QueueUrl=sqs.get_queue_url(QueueName=name)["QueueUrl"])
            except sqs.exceptions.QueueDoesNotExist:
                pass
    dynamodb = sync_client(settings, "dynamodb")
    for table in (settings.jobs_table, settings.users_table):
        try:
            dynamodb.delete_table(TableName=table)
        except dynamodb.exceptions.ResourceNotFoundException:
            pass
    s3 = sync_client(settings, "s3")
    try:
        for page in s3.get_paginator("list_object_versions").paginate(Bucket=settings.bucket):
            doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                      for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
            if doomed:
                s3.delete_objects(Bucket=settings.bucket, Delete={"Objects": doomed})
        s3.delete_bucket(Bucket=settings.bucket)
    except s3.exceptions.NoSuchBucket:
        pass
