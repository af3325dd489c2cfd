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
        async with ingest_site(settings, tmp_path, part_bytes=256 * 1024, max_bytes=10**6) as site:
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
