"""Finding 3 of issue 19: request bodies are bounded per route, refused with 413 by their
`Content-Length` before anything is read and, without one, as soon as the bytes received
pass the limit, so a client without a credential (`/console/login`) cannot make the process
hold a 150 MiB body."""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import uvicorn

from services.results.console.tests.fakes import Console
from tests.conftest import free_port

MIB = 1024 * 1024
HUGE = 150 * MIB


def _post_streamed(app, path: str, chunks: int, chunk_bytes: int = MIB,
                   headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, int, bytes]:
    """POST a body of `chunks` chunks, sent only as the app asks for them (chunked: no length),
    straight through ASGI; (status, bytes the app pulled, response body)."""
    pulled = 0
    sent: list[dict] = []
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"content-type", b"application/x-www-form-urlencoded"),
                         (b"transfer-encoding", b"chunked"), *(headers or [])],
             "client": ("127.0.0.1", 50000), "server": ("testserver", 80)}

    async def receive():
        nonlocal pulled
        if pulled >= chunks * chunk_bytes:
            await asyncio.sleep(3600)  # the client waits for the answer
        pulled += chunk_bytes
        return {"type": "http.request", "body": b"a" * chunk_bytes, "more_body": pulled < chunks * chunk_bytes}

    async def send(message):
        sent.append(message)

    async def run():
        await asyncio.wait_for(app(scope, receive, send), timeout=30)

    asyncio.run(run())
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], pulled, body


def test_request_body_limit_refuses_oversized_login_while_streaming(tmp_path):
    """150 MiB to the sign-in page, which needs no credential, without a Content-Length: 413
    after at most the limit and one chunk were read."""
    app = Console(tmp_path).app
    status, pulled, body = _post_streamed(app, "/console/login", chunks=HUGE // MIB)
    assert status == 413 and b"larger than this route accepts" in body
    assert pulled <= 2 * MIB, f"read {pulled} bytes of {HUGE}"  # the form limit (64 KiB) and one chunk


def test_request_body_limit_refuses_oversized_login_by_its_length_before_reading_it(tmp_path):
    """Over a real socket to uvicorn: headers declaring 150 MiB and no body sent at all are
    answered 413 at once, so nothing was waited for or read."""
    app = Console(tmp_path).app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /console/login HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         b"Content-Type: application/x-www-form-urlencoded\r\n"
                         + f"Content-Length: {HUGE}\r\n\r\n".encode() + b"token=" + b"a" * 1000)
            answer = sock.recv(65536).decode("latin-1")
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_request_body_limit_is_sized_per_route(tmp_path):
    """Small for JSON and forms; an EHR's event may be larger, up to its own limit."""
    from shared.runtime.http import EVENT_BYTES, RequestBodyLimit

    seen = []

    async def echo(scope, receive, send):
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        seen.append(total)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = RequestBodyLimit(echo, limits={"/api/v1/events": EVENT_BYTES})
    status, _, _ = _post_streamed(limited, "/api/v1/events", chunks=1, chunk_bytes=EVENT_BYTES // 2)
    assert status == 200 and seen == [EVENT_BYTES // 2]
    status, _, _ = _post_streamed(limited, "/api/v1/analyze", chunks=1, chunk_bytes=EVENT_BYTES // 2)
    assert status == 413 and seen == [EVENT_BYTES // 2]  # the app never saw the JSON route's oversized body
    status, pulled, _ = _post_streamed(limited, "/api/v1/events", chunks=HUGE // MIB)
    assert status == 413 and pulled <= EVENT_BYTES + MIB
    declared = [(b"content-length", str(HUGE).encode())]
    status, pulled, _ = _post_streamed(limited, "/api/v1/events", chunks=HUGE // MIB, headers=declared)
    assert status == 413 and pulled == 0


def test_request_body_limit_of_the_ingest_api_is_small_for_json_and_larger_for_events(tmp_path):
    from schizodot.dev_identity import DevIssuer
    from services.ingest.api import IngestAccess, create_app
    from services.ingest.settings import CheckinLimits, UploadPolicy
    from shared.fakes import FakeAdapters, InMemoryApiKeys, InMemoryPatientLinks, MemoryAuditStore
    from shared.identity.audit import AuditTrail
    from shared.identity.auth import Authenticator
    from shared.identity.ratelimit import MemoryRateLimiter
    from shared.identity.tokens import AuthSettings

    issuer = DevIssuer(tmp_path)
    auth = Authenticator(AuthSettings(**{k.removeprefix("SCHIZODOT_AUTH_").lower(): v
                                         for k, v in issuer.environment().items()}),
                         InMemoryApiKeys(), InMemoryPatientLinks())
    fakes = FakeAdapters()

    async def enqueue(body: str) -> str:
        return "m-1"

    app = create_app(UploadPolicy(), fakes.jobs, fakes.storage.presigned_post,
                     IngestAccess(auth, AuditTrail(MemoryAuditStore(), "unit-test-key", "test"), MemoryRateLimiter(),
                                  InMemoryPatientLinks(), CheckinLimits()), enqueue_event=enqueue)
    bulky = {"note": "x" * (200 * 1024)}  # 200 KiB of metadata
    from fastapi.testclient import TestClient

    with TestClient(app) as http:
        headers = {"Authorization": f"Bearer {issuer.mint('dev-ehr')}"}
        analyze = http.post("/api/v1/analyze", headers=headers, json={
            "patient_id": "patient-1", "filename": "a.mp4", "content_type": "video/mp4", "metadata": bulky})
        assert analyze.status_code == 413
        event = http.post("/api/v1/events", headers=headers, json={
            "specversion": "1.0", "id": "evt-big", "source": "urn:ehr:x", "type": "org.schizodot.checkin.submitted.v1",
            "datacontenttype": "application/json", "data": {"clinic_id": "dev-clinic", "patient_id": "patient-1",
                                                           "s3_key": "incoming/dev-clinic/a.mp4", "metadata": bulky}})
        assert event.status_code != 413, event.text
