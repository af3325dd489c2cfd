"""The clients' retry policy against a real HTTP server that misbehaves, and
the CLI's one-line report when a service stays away."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import httpx
import pytest

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
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Flaky.seen = []
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_429_waits_as_long_as_retry_after_asks_then_succeeds(flaky):
    Flaky.script = [(429, {"Retry-After": "2"}), (503, {}), (502, {})]
    with httpx.Client() as http:
        response = http_request(http, "POST", flaky, json={}, policy=RetryPolicy(deadline_seconds=30), what="test")
    assert response.status_code == 201 and len(Flaky.seen) == 4
    assert Flaky.seen[1] - Flaky.seen[0] >= 2.0  # Retry-After honoured
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
        http_request(http, "POST", flaky, json={}, policy=RetryPolicy(deadline_seconds=2), what="creating the job")
    assert 2 <= time.monotonic() - started < 15
    assert str(caught.value) == "creating the job: the server kept answering 503 Service Unavailable for 2 s"


def _cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "schizodot.cli", *args], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **env})


def test_cli_reports_an_unreachable_api_in_one_line_with_exit_3(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not read before the API answers")
    started = time.monotonic()
    result = _cli("--retry-deadline", "3", "--api-url", f"http://127.0.0.1:{free_port()}", "submit", str(clip),
                  "--patient-id", "patient-001")
    assert result.returncode == 3
    assert time.monotonic() - started >= 3  # it kept trying until the deadline
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: creating the job: cannot reach 127.0.0.1:") and "ConnectError" in result.stderr


def test_cli_reports_an_unreachable_aws_api_in_one_line_with_exit_3():
    result = _cli("--retry-deadline", "2", "jobs", "--patient-id", "patient-001",
                  AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_MAX_ATTEMPTS="2",
                  AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")
    assert result.returncode == 3, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: listing the jobs: the AWS API kept failing (EndpointConnectionError")


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
