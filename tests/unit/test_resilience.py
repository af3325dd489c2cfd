"""The clients' retry policy against a real HTTP server that misbehaves, and
the CLI's one-line report when a service stays away."""

from __future__ import annotations

import asyncio
import http.server
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

from schizodot.dev_identity import DevIssuer
from schizodot.resilience import RetryPolicy, ServiceUnreachable, http_request
from schizodot.stack import REPO_ROOT
from tests.conftest import free_port


class Flaky(http.server.BaseHTTPRequestHandler):
    script: list[tuple[int, dict[str, str]]] = []
    seen: list[float] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        Flaky.seen.append(time.monotonic())
        status, headers = Flaky.script.pop(0) if Flaky.script else (201, {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flaky():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    Flaky.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_429_waits_as_long_as_retry_after_asks_then_succeeds(flaky):
    Flaky.script = [(429, {"Retry-After": "1"}), (503, {}), (502, {})]
    with httpx.Client() as http:
        response = http_request(http, "POST", flaky, json={}, policy=RetryPolicy(deadline_seconds=30), what="test")
    assert response.status_code == 201 and len(Flaky.seen) == 4
    assert Flaky.seen[1] - Flaky.seen[0] >= 1.0  # Retry-After honoured
    assert Flaky.seen[3] - Flaky.seen[1] < 10  # then capped back-off with jitter


def test_a_client_error_is_answered_not_retried(flaky):
    Flaky.script = [(409, {})]
    with httpx.Client() as http:
        assert http_request(http, "POST", flaky, json={}, policy=RetryPolicy(), what="test").status_code == 409
    assert len(Flaky.seen) == 1


def test_failure_beyond_the_deadline_is_one_sentence(flaky):
    Flaky.script = [(503, {})] * 100
    started = time.monotonic()
    with httpx.Client() as http, pytest.raises(ServiceUnreachable) as caught:
        http_request(http, "POST", flaky, json={}, policy=RetryPolicy(deadline_seconds=1), what="creating the job")
    assert 1 <= time.monotonic() - started < 15
    assert str(caught.value) == "creating the job: the server kept answering 503 Service Unavailable for 1 s"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "schizodot.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env})


@pytest.fixture
def issuer(tmp_path) -> DevIssuer:
    """A development issuer's keys, as the embedded stack keeps them: the CLI signs its own tokens with them."""
    return DevIssuer(tmp_path / "stack").ensure()


def _one_line(stderr: str) -> bool:
    return stderr.strip().splitlines() == [stderr.strip()] and "Traceback" not in stderr


@pytest.mark.server  # starts the CLI as a process
def test_cli_reports_an_unreachable_api_in_one_line_with_exit_3(tmp_path, issuer):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read before the API answers")
    started = time.monotonic()
    result = _cli("--retry-deadline", "3", "--api-url", f"http://127.0.0.1:{free_port()}", "submit", str(clip),
                  "--patient-id", "patient-001", SCHIZODOT_STACK_STATE_DIR=str(issuer.folder.parent))
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started >= 3  # it kept trying until the deadline
    assert _one_line(result.stderr)
    assert result.stderr.startswith("error: creating the job: cannot reach 127.0.0.1:") and "ConnectError" in result.stderr


@pytest.fixture
def results_api_without_aws(issuer, monkeypatch):
    """The results API as its process composes it (real AWS adapters, real token checks),
    with its AWS endpoint on a port where nothing listens: it is up, its store is away."""
    from services.results.api import ResultsAccess, create_app
    from services.results.erasure import DynamoErasures
    from services.results.settings import ResultsSettings
    from shared.access import build_access
    from shared.auth import AuthSettings
    from shared.aws import AsyncClients
    from shared.history import PatientHistory
    from shared.http import serve_http
    from shared.jobs import JobsRepository
    from shared.settings import CommonSettings

    for name, value in {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}", "AWS_MAX_ATTEMPTS": "2",
                        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "us-east-1", "SCHIZODOT_PSEUDONYM_KEY": "unit-test-key"}.items():
        monkeypatch.setenv(name, value)
    common, port = CommonSettings(), free_port()
    auth = AuthSettings(**{k.removeprefix("SCHIZODOT_AUTH_").lower(): v for k, v in issuer.environment().items()})
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        async with AsyncClients(common) as aws:
            access = build_access(common, aws, service="schizodot-results", auth=auth)

            async def no_erasures(_body: str) -> str:
                raise AssertionError("no erasure here")

            app = create_app(ResultsSettings(), JobsRepository(aws.dynamodb, common.jobs_table),
                             PatientHistory(aws.dynamodb, common.users_table),
                             ResultsAccess(access.authenticator, access.audit, access.api_keys,
                                           DynamoErasures(aws.dynamodb, common.erasures_table), no_erasures))
            await serve_http(app, "127.0.0.1", port, stop, port_setting="RESULTS_API_PORT", required=True)

    server = threading.Thread(target=loop.run_until_complete, args=(serve(),), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            assert httpx.get(f"{url}/health", timeout=2).status_code == 200
            break
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the results API did not start"
            time.sleep(0.1)
    yield url
    loop.call_soon_threadsafe(stop.set)
    server.join(30)


@pytest.mark.server  # starts the CLI as a process
def test_cli_reports_a_results_api_whose_aws_store_is_away_in_one_line_with_exit_3(issuer, results_api_without_aws):
    """The CLI reads through the results API; when the AWS API behind it stays away, the API
    answers 503 with Retry-After, the CLI waits until its deadline, then says so in one line."""
    headers = {"Authorization": f"Bearer {issuer.mint('dev-clinician')}"}
    direct = httpx.get(f"{results_api_without_aws}/api/v1/patients/patient-001/jobs", headers=headers, timeout=30)
    assert direct.status_code == 503 and direct.headers["Retry-After"] and "patient-001" not in direct.text
    started = time.monotonic()
    result = _cli("--retry-deadline", "2", "--results-api-url", results_api_without_aws,
                  "jobs", "--patient-id", "patient-001", SCHIZODOT_STACK_STATE_DIR=str(issuer.folder.parent))
    assert result.returncode == 3, result.stderr
    assert time.monotonic() - started >= 2 and _one_line(result.stderr)
    assert result.stderr.startswith("error: reading the results API: the server kept answering 503 Service "
                                    "Unavailable for 2 s"), result.stderr


@pytest.mark.server  # starts the CLI as a process
def test_cli_without_a_credential_says_how_to_get_one_with_exit_2(tmp_path):
    result = _cli("--results-api-url", f"http://127.0.0.1:{free_port()}", "jobs", "--patient-id", "patient-001",
                  SCHIZODOT_STACK_STATE_DIR=str(tmp_path / "no-stack"), SCHIZODOT_TOKEN="")
    assert result.returncode == 2 and _one_line(result.stderr)
    assert result.stderr.startswith("error: no credential: pass --token or set SCHIZODOT_TOKEN")


def test_an_api_whose_aws_store_is_away_answers_503_with_retry_after():
    from botocore.exceptions import ClientError, EndpointConnectionError
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from shared.http import install_unavailable_dependency_errors

    app = FastAPI()
    install_unavailable_dependency_errors(app)

    @app.get("/away")
    async def away() -> None:
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:1")

    @app.get("/throttled")
    async def throttled() -> None:
        raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetItem")

    @app.get("/wrong")
    async def wrong() -> None:
        raise ClientError({"Error": {"Code": "ValidationException"},
                           "ResponseMetadata": {"HTTPStatusCode": 400}}, "GetItem")

    client = TestClient(app, raise_server_exceptions=False)
    for path in ("/away", "/throttled"):
        response = client.get(path)
        assert response.status_code == 503 and response.headers["Retry-After"] == "2", path
    assert client.get("/wrong").status_code == 500  # a bug stays a 500
