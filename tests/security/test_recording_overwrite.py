"""Finding 7 of the security review (issue 19): a completed check-in's recording could be
overwritten. Reusing an Idempotency-Key handed out a fresh upload form for a job in any
status, so the console's video could stop matching its findings. Failed on the code
before the fix (the repeat was 200 with a form)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from services.ingest.patient.tests.app import ingest_site, update_job
from tests.conftest import _dummy_aws_credentials, aws_server  # noqa: F401

pytestmark = pytest.mark.server


def test_a_reused_idempotency_key_gets_no_upload_form_once_the_recording_arrived(aws_server, tmp_path):
    settings = aws_server

    async def scenario() -> None:
        async with ingest_site(settings, tmp_path, part_bytes=256 * 1024, max_bytes=10**6,
                               upload_mode="presigned") as site:  # forms: the mode for real S3
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app), base_url="http://ingest") as api:
                headers = {**site.auth("dev-uploader"), "Idempotency-Key": str(uuid.uuid4())}
                body = {"patient_id": f"patient-{uuid.uuid4().hex[:8]}", "filename": "checkin.mp4",
                        "content_type": "video/mp4"}
                first = await api.post("/api/v1/analyze", json=body, headers=headers)
                assert first.status_code == 201
                waiting = await api.post("/api/v1/analyze", json=body, headers=headers)
                assert waiting.status_code == 200 and waiting.json()["upload_fields"]  # still waiting: a form
                form = first.json()
                async with httpx.AsyncClient() as s3:
                    sent = await s3.post(form["upload_url"], data=form["upload_fields"],
                                         files={"file": ("checkin.mp4", b"\x00" * 100, "video/mp4")})
                assert sent.status_code in (200, 204)
                arrived = await api.post("/api/v1/analyze", json=body, headers=headers)
                assert arrived.status_code == 409 and "already received" in arrived.json()["detail"]
                assert "upload_fields" not in arrived.json()
                update_job(settings, form["job_id"], status="completed")
                done = await api.post("/api/v1/analyze", json=body, headers=headers)
                assert done.status_code == 409

    asyncio.run(scenario())


def test_an_earlier_upload_form_cannot_overwrite_a_completed_checkins_recording(aws_server, tmp_path):
    """The remainder of finding 7: the upload instructions a check-in was given (and those of a retry
    with the same Idempotency-Key) stay unusable once the recording is in. Through the upload proxy
    (docs/uploads.md) a file is accepted only while the check-in waits for it. Failed on the code
    before the fix: a presigned POST form stays valid until it expires, so it replaced the recording
    of a completed check-in (204) and the console's video no longer matched the findings."""
    settings = aws_server
    recording = b"\0\0\0\x18ftypmp42" + b"the recording the findings came from" * 50
    replacement = b"\0\0\0\x18ftypmp42" + b"another video" * 50

    async def send(http: httpx.AsyncClient, form: dict, data: bytes, credential: dict) -> httpx.Response:
        from schizodot.upload import upload_arguments

        return await http.request(**upload_arguments(form, "checkin.mp4", data, "video/mp4", credential))

    async def scenario() -> str:
        async with ingest_site(settings, tmp_path, part_bytes=256 * 1024, max_bytes=10**6) as site:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app), base_url="http://ingest") as api:
                uploader = site.auth("dev-uploader")
                headers = {**uploader, "Idempotency-Key": str(uuid.uuid4())}
                body = {"patient_id": f"patient-{uuid.uuid4().hex[:8]}", "filename": "checkin.mp4",
                        "content_type": "video/mp4"}
                first = (await api.post("/api/v1/analyze", json=body, headers=headers)).json()
                retried = (await api.post("/api/v1/analyze", json=body, headers=headers)).json()  # answer lost
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app), base_url="http://ingest") \
                        if first.get("upload_method") == "PUT" else httpx.AsyncClient() as uploads:
                    sent = await send(uploads, retried, recording, uploader)
                    assert sent.status_code in (200, 201, 204), sent.text
                    update_job(settings, first["job_id"], status="completed", progress=100)
                    for form in (first, retried):
                        again = await send(uploads, form, replacement, uploader)
                        assert again.status_code in (403, 409), (again.status_code, again.text)
                return (await site.jobs.get(first["job_id"])).s3_key

    key = asyncio.run(scenario())
    from shared.aws.clients import sync_client

    stored = sync_client(settings, "s3").get_object(Bucket=settings.bucket, Key=key)["Body"].read()
    assert stored == recording
