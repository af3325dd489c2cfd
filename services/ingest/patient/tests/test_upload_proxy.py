"""Upload mode "proxy" (docs/uploads.md): clinic apps and patients' phones send the recording to
the ingest API, which streams it to S3 (moto's server over HTTP) as a multipart upload; the
storage endpoint is never handed out. A real video made here with ffmpeg goes the whole way
to the S3 notification that starts the analysis; each bad input gets a clear error and
leaves nothing behind.

Parts are 32 KiB here (the emulator's 5 MiB floor is lowered) so that a small video makes
several parts, as a large one does with the service's 8 MiB.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import httpx
import pytest

from schizodot.dev_identity import DEV_CLINIC
from services.ingest.handlers import parse_ingest_message
from services.ingest.patient.tests.app import ingest_site, update_job
from shared.aws.clients import sync_client

PART = 32 * 1024


@pytest.fixture(autouse=True)
def small_parts(monkeypatch):
    monkeypatch.setattr("moto.s3.models.S3_UPLOAD_PART_MIN_SIZE", PART)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> bytes:
    """Two seconds of a test pattern with a tone, as MP4 (about 75 KB: three parts)."""
    path = tmp_path_factory.mktemp("media") / "checkin.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=duration=2:size=320x240:rate=15",
                    "-f", "lavfi", "-i", "sine=frequency=440:duration=2", "-c:v", "mpeg4", "-q:v", "2",
                    "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(path)], check=True)
    data = path.read_bytes()
    assert len(data) > 2 * PART
    return data


def _api(site) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=site.app), base_url="http://ingest:8080")


def _stored(settings, key: str) -> dict | None:
    try:
        return sync_client(settings, "s3").get_object(Bucket=settings.bucket, Key=key)
    except Exception as error:  # noqa: BLE001 - botocore's NoSuchKey
        assert "NoSuchKey" in str(error), error
        return None


def _open_uploads(settings, key: str) -> list:
    response = sync_client(settings, "s3").list_multipart_uploads(Bucket=settings.bucket, Prefix=key)
    return response.get("Uploads", [])


def _notified_jobs(settings) -> set[str]:
    """Job ids of the S3 notifications now on the ingest queue (received and deleted: they start analyses)."""
    sqs = sync_client(settings, "sqs")
    url = sqs.get_queue_url(QueueName=settings.queue_name("ingest"))["QueueUrl"]
    found: set[str] = set()
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        if not messages:
            return found
        for message in messages:
            found.update(item.job_id for item in parse_ingest_message(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


async def _checkin(api, site, content_type: str = "video/mp4") -> dict:
    created = await api.post("/api/v1/analyze", headers=site.auth("dev-uploader"), json={
        "patient_id": f"patient-{uuid.uuid4().hex[:8]}", "filename": "checkin.mp4", "content_type": content_type})
    assert created.status_code == 201, created.text
    return created.json()


def test_a_clinic_app_sends_a_real_video_through_the_api_and_s3_announces_it(aws_server, tmp_path, video):
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6) as site, _api(site) as api:
            created = await _checkin(api, site)
            # the instructions name this API, never the storage endpoint
            assert created["upload_method"] == "PUT" and created["upload_fields"] == {}
            assert created["upload_url"] == f"http://ingest:8080/api/v1/uploads/{created['job_id']}"
            sent = await api.put(created["upload_url"], content=video,
                                 headers={**site.auth("dev-uploader"), "Content-Type": "video/mp4"})
            assert sent.status_code == 201, sent.text
            assert sent.json() == {"job_id": created["job_id"], "status": "received", "bytes": len(video)}
            trail, _ = await site.access.audit.query(DEV_CLINIC, since=None, patient_ref_=None, limit=1000, after=None)
            assert [r["action"] for r in trail if r["job_id"] == created["job_id"]] == [
                "checkin.create", "checkin.recording_received"]
            job = await site.jobs.get(created["job_id"])
            assert job.status == "queued"  # the ingest stage takes it from the notification, as for any upload
            return job.s3_key, created["job_id"]

    key, job_id = asyncio.run(scenario())
    stored = _stored(aws_server, key)
    assert stored["Body"].read() == video and stored["ContentType"] == "video/mp4"
    assert stored["ServerSideEncryption"] == "aws:kms"  # the bucket's default, as for a presigned upload
    assert job_id in _notified_jobs(aws_server)  # the same S3 event a presigned upload makes starts the analysis
    path = tmp_path / "stored.mp4"
    path.write_bytes(_stored(aws_server, key)["Body"].read())
    streams = json.loads(subprocess.run(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams",
                                         str(path)], capture_output=True, text=True, check=True).stdout)["streams"]
    assert {s["codec_type"] for s in streams} == {"video", "audio"}


def test_bad_uploads_get_a_clear_error_and_leave_nothing(aws_server, tmp_path, video):
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=len(video)) as site, \
                _api(site) as api:
            created = await _checkin(api, site)
            url, auth = created["upload_url"], site.auth("dev-uploader")
            key = (await site.jobs.get(created["job_id"])).s3_key
            mp4 = {**auth, "Content-Type": "video/mp4"}
            answers = {
                "no credential": await api.put(url, content=video, headers={"Content-Type": "video/mp4"}),
                "another clinic": await api.put(url, content=video, headers={
                    **site.auth("other-uploader"), "Content-Type": "video/mp4"}),
                "too large": await api.put(url, content=video + b"\0", headers=mp4),
                "too large, streamed": await api.put(url, content=_chunks(video + b"\0" * PART), headers=mp4),
                "not a video": await api.put(url, content=b"%PDF-1.7 " + b"x" * PART, headers=mp4),
                "not its type": await api.put(url, content=video, headers={**auth, "Content-Type": "video/webm"}),
                "not a media type": await api.put(url, content=video, headers={**auth, "Content-Type": "text/plain"}),
                "empty": await api.put(url, content=b"", headers=mp4),
            }
            seen = {name: (r.status_code, r.json()["detail"]) for name, r in answers.items()}
            assert seen["no credential"] == (401, "authentication required")
            assert seen["another clinic"][0] == 404
            assert seen["too large"][0] == 413 and "larger than this route accepts" in seen["too large"][1]
            assert seen["too large, streamed"][0] == 413
            assert seen["not a video"] == (422, "the file is not a video/mp4 recording")
            assert seen["not its type"][0] == 415 and "created for a video/mp4 file" in seen["not its type"][1]
            assert seen["not a media type"][0] == 415 and "content_type" in seen["not a media type"][1]
            assert seen["empty"] == (422, "the recording is empty")
            assert _stored(aws_server, key) is None and _open_uploads(aws_server, key) == []  # nothing kept
            assert (await site.jobs.get(created["job_id"])).status == "queued"  # still waiting

            sent = await api.put(url, content=video, headers=mp4)  # then the real one
            assert sent.status_code == 201, sent.text
            again = await api.put(url, content=b"\0\0\0\x18ftypmp42" + b"y" * 1000, headers=mp4)
            assert again.status_code == 409 and "never replaced" in again.json()["detail"]
            update_job(aws_server, created["job_id"], status="completed", progress=100)
            done = await api.put(url, content=b"\0\0\0\x18ftypmp42" + b"y" * 1000, headers=mp4)
            assert done.status_code == 409
            return key

    key = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video  # the recording is the first one, whole


async def _chunks(data: bytes):
    for start in range(0, len(data), 16 * 1024):  # no Content-Length: the limit applies while streaming
        yield data[start:start + 16 * 1024]


def test_a_patient_link_sends_its_one_recording_through_the_api(aws_server, tmp_path, video):
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6) as site, _api(site) as api:
            link = (await api.post("/api/v1/patient-links", headers=site.auth("dev-clinician"),
                                   json={"patient_id": f"patient-{uuid.uuid4().hex[:8]}"})).json()
            other = (await api.post("/api/v1/patient-links", headers=site.auth("dev-clinician"),
                                    json={"patient_id": f"patient-{uuid.uuid4().hex[:8]}"})).json()
            token = {"Authorization": f"Bearer {link['token']}"}
            form = await api.post("/api/v1/patient-link/upload", headers=token, json={"content_type": "video/mp4"})
            assert form.status_code == 201 and form.json()["upload_method"] == "PUT"
            url = form.json()["upload_url"]
            webm = {"Content-Type": "video/mp4"}
            stranger = await api.put(url, content=video, headers={
                "Authorization": f"Bearer {other['token']}", **webm})  # another check-in's link
            assert stranger.status_code == 404
            sent = await api.put(url, content=video, headers={**token, **webm})
            assert sent.status_code == 201, sent.text
            used = await api.put(url, content=video, headers={**token, **webm})
            assert used.status_code == 401  # the link's one recording is handed over
            status = await api.get("/api/v1/checkin/status", headers=token)
            assert status.json()["state"] == "received"
            return (await site.jobs.get(link["job_id"])).s3_key

    key = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video


def test_the_pages_parts_go_through_the_api_only_while_the_checkin_waits(aws_server, tmp_path, video):
    async def scenario():
        async with ingest_site(aws_server, tmp_path, part_bytes=PART, max_bytes=10**6) as site, _api(site) as api:
            link = (await api.post("/api/v1/patient-links", headers=site.auth("dev-clinician"),
                                   json={"patient_id": f"patient-{uuid.uuid4().hex[:8]}"})).json()
            token = {"Authorization": f"Bearer {link['token']}"}
            plan = (await api.post("/api/v1/checkin/upload", headers=token,
                                   json={"content_type": "video/mp4", "size": len(video)})).json()
            assert plan["send_token"] and all(p["url"].startswith("/api/v1/checkin/upload/part?") for p in plan["parts"])
            first = plan["parts"][0]["url"]
            assert (await api.put(first, content=video[:PART])).status_code == 401  # the link's token is needed
            big = await api.put(first, content=video[:PART + 1], headers=token)
            assert big.status_code == 413  # at most one part per request
            wrong = await api.put(first.replace("uploadId=", "uploadId=x"), content=video[:PART], headers=token)
            assert wrong.status_code == 410
            for part in plan["parts"]:
                start = (part["number"] - 1) * PART
                sent = await api.put(part["url"], content=video[start:start + part["size"]], headers=token)
                assert sent.status_code == 200 and sent.json() == {"number": part["number"], "size": part["size"]}
            done = await api.post("/api/v1/checkin/upload/complete", headers=token,
                                  json={"upload_id": plan["upload_id"], "size": len(video)})
            assert done.json()["state"] == "received"
            late = await api.put(first, content=b"z" * PART, headers=token)
            assert late.status_code == 401  # used up; and a check-in with its recording refuses any part
            return (await site.jobs.get(link["job_id"])).s3_key

    key = asyncio.run(scenario())
    assert _stored(aws_server, key)["Body"].read() == video
