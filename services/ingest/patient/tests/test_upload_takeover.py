"""A recording PUT to the ingest API (upload mode "proxy", docs/uploads.md) when an earlier one for the same
check-in is still open in S3: its ingest process was killed mid-upload, or it is still being sent.

The open upload is made here the way a killed ingest leaves one: directly in S3 (moto's server over HTTP),
with a part in it. While S3 has seen a part of it within INGEST_UPLOAD_STALE_SECONDS (3 s here) a new PUT
gets 409 with Retry-After; after that the new PUT aborts it and stores the recording. A request that was
in fact still alive can then store nothing. And the clients' side (`schizodot.upload.send_recording`, the
CLI's upload) answers a 409 by reading the check-in: received already, or wait and send again.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid

import httpx
import pytest

from schizodot.dev_identity import DEV_CLINIC
from schizodot.resilience import RetryPolicy
from schizodot.upload import send_recording
from services.ingest.patient.tests.app import ingest_site
from services.ingest.patient.tests.test_upload_proxy import PART, _stored, video  # noqa: F401 - the fixture
from services.ingest.patient.uploads import RecordingExists
from shared.aws.clients import sync_client
from shared.runtime.http import serve_http
from tests.conftest import free_port

STALE = 3.0


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", PART)


def _api(site) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app), base_url="http://ingest:8080")


async def _checkin(api, site) -> tuple[dict, str]:
    created = await api.post("/api/v1/analyze", headers=site.auth("dev-uploader"), json={
        "patient_id": f"patient-{uuid.uuid4().hex[:8]}", "filename": "checkin.mp4", "content_type": "video/mp4"})
    assert created.status_code == 201, created.text
    return created.json(), (await site.jobs.get(created.json()["job_id"])).s3_key


def _left_behind(settings, key: str, first_part: bytes) -> str:
    """An open multipart upload with one part, as an ingest process killed mid-upload leaves it."""
    s3 = sync_client(settings, "s3")
    upload_id = s3.create_multipart_upload(Bucket=settings.bucket, Key=key, ContentType="video/mp4")["UploadId"]
    s3.upload_part(Bucket=settings.bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=first_part)
    return upload_id


def _open_ids(settings, key: str) -> list[str]:
    response = sync_client(settings, "s3").list_multipart_uploads(Bucket=settings.bucket, Prefix=key)
    return [u["UploadId"] for u in response.get("Uploads", [])]


def test_an_upload_left_open_is_taken_over_once_stale_and_a_live_one_answers_409_with_retry_after(
        aws_server, tmp_path, video):
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6,
                               upload_stale_seconds=STALE) as site, _api(site) as api:
            created, key = await _checkin(api, site)
            mp4 = {**site.auth("dev-uploader"), "Content-Type": "video/mp4"}
            dead = _left_behind(aws_server, key, video[:PART])
            left_at = time.monotonic()

            early = await api.put(created["upload_url"], content=video, headers=mp4)
            assert early.status_code == 409, early.text
            assert "being sent already" in early.json()["detail"] and "Retry-After" in early.json()["detail"]
            assert 1 <= int(early.headers["Retry-After"]) <= STALE
            assert _open_ids(aws_server, key) == [dead]  # a live upload is left alone
            status = await api.get(f"/api/v1/jobs/{created['job_id']}", headers=site.auth("dev-uploader"))
            assert status.json()["awaiting_recording"] is True

            await asyncio.sleep(STALE + 0.5 - (time.monotonic() - left_at))
            late = await api.put(created["upload_url"], content=video, headers=mp4)
            assert late.status_code == 201, late.text
            assert late.json()["bytes"] == len(video)
            trail, _ = await site.access.audit.query(DEV_CLINIC, since=None, patient_ref_=None, limit=1000, after=None)
            actions = [r["action"] for r in trail if r["job_id"] == created["job_id"]]
            assert actions == ["checkin.create", "checkin.upload_abandoned", "checkin.recording_received"]
            status = await api.get(f"/api/v1/jobs/{created['job_id']}", headers=site.auth("dev-uploader"))
            assert status.json()["awaiting_recording"] is False
            return key, dead

    key, dead = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video
    assert _open_ids(aws_server, key) == []
    with pytest.raises(Exception, match="NoSuchUpload"):  # the dead upload cannot be finished any more
        sync_client(aws_server, "s3").complete_multipart_upload(
            Bucket=aws_server.bucket, Key=key, UploadId=dead,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": "x"}]})


def test_a_request_taken_over_while_still_alive_stores_nothing(aws_server, tmp_path, video):
    """The stale upload's request was only slow: when it sends again after the takeover, it fails, and the
    recording the new PUT stored stays."""
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6,
                               upload_stale_seconds=STALE) as site, _api(site) as api:
            created, key = await _checkin(api, site)
            mp4 = {**site.auth("dev-uploader"), "Content-Type": "video/mp4"}
            resume = asyncio.Event()
            other = video[:PART + 100] + bytes(reversed(video[PART + 100:]))  # another file of the same size

            async def slow_body():
                yield other[:PART + 100]  # one part reaches S3, then the sender stalls
                await resume.wait()
                yield other[PART + 100:]

            slow = asyncio.create_task(api.put(created["upload_url"], content=slow_body(), headers=mp4))
            while not _open_ids(aws_server, key):
                await asyncio.sleep(0.05)
            await asyncio.sleep(STALE + 0.5)
            new = await api.put(created["upload_url"], content=video, headers=mp4)
            assert new.status_code == 201, new.text
            resume.set()
            old = await slow
            assert old.status_code == 409 and "took it over" in old.json()["detail"], old.text
            return key

    key = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video
    assert _open_ids(aws_server, key) == []


def test_completing_over_a_stored_recording_is_refused_by_s3(aws_server, tmp_path, video):
    """The last line: a request whose upload completes after another stored the recording cannot replace it."""
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6) as site, _api(site) as api:
            created, key = await _checkin(api, site)
            late = await site.store.create(key, "video/mp4")
            part = await site.store.upload_part(key, late, 1, b"\0\0\0\x18ftypmp42" + b"y" * 100)
            sent = await api.put(created["upload_url"], content=video,
                                 headers={**site.auth("dev-uploader"), "Content-Type": "video/mp4"})
            assert sent.status_code == 409  # the late upload is open and fresh: this PUT waits for it
            sync_client(aws_server, "s3").put_object(Bucket=aws_server.bucket, Key=key, Body=video)
            with pytest.raises(RecordingExists):
                await site.store.complete(key, late, [part], if_absent=True)
            await site.store.abort(key, late)
            return key

    key = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video


async def _served(site):
    """The site's app on a real port (as ingest serves it), for the synchronous clients."""
    port, stop = free_port(), asyncio.Event()
    server = asyncio.create_task(serve_http(site.app, "127.0.0.1", port, stop, port_setting="PORT", required=True))
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            await asyncio.sleep(0.05)
    return f"http://127.0.0.1:{port}", stop, server


def _send(created: dict, base: str, site, video: bytes, deadline: float):
    with httpx.Client(timeout=30) as http:
        return send_recording(http, {**created, "upload_url": created["upload_url"].replace("http://ingest:8080", base)},
                              "checkin.mp4", video, "video/mp4", site.auth("dev-uploader"),
                              status_url=f"{base}/api/v1/jobs/{created['job_id']}",
                              policy=RetryPolicy(deadline_seconds=deadline))


def test_the_client_takes_a_409_for_a_recording_already_received_as_sent(aws_server, tmp_path, video):
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6) as site, _api(site) as api:
            created, key = await _checkin(api, site)
            base, stop, server = await _served(site)
            try:
                # the first try stored it, and its answer was lost
                first = await api.put(created["upload_url"], content=video,
                                      headers={**site.auth("dev-uploader"), "Content-Type": "video/mp4"})
                assert first.status_code == 201
                started = time.monotonic()
                sent = await asyncio.to_thread(_send, created, base, site, b"\0\0\0\x18ftypmp42" + b"z" * 500, 60)
                assert sent.ok and sent.received_before and sent.response.status_code == 409
                assert time.monotonic() - started < 10  # answered at once, not retried to the deadline
            finally:
                stop.set()
                await server
            return key

    key = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video  # and nothing was replaced


def test_the_client_waits_out_an_upload_left_open_and_then_sends(aws_server, tmp_path, video):
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6,
                               upload_stale_seconds=STALE) as site, _api(site) as api:
            created, key = await _checkin(api, site)
            base, stop, server = await _served(site)
            try:
                _left_behind(aws_server, key, video[:PART])
                started = time.monotonic()
                sent = await asyncio.to_thread(_send, created, base, site, video, 60)
                assert sent.ok and not sent.received_before and sent.response.status_code == 201, sent.response.text
                assert time.monotonic() - started >= STALE - 1  # it waited for the open upload to go stale
            finally:
                stop.set()
                await server
            return key

    key = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video
