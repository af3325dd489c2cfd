"""Every bad input gets a clear error (HTTP 4xx, a failed job with a readable
`error`, or a dead-lettered event with its reason) and nothing else is lost."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from schizodot import samples
from schizodot.dev_identity import DEV_CLINIC
from schizodot.upload import upload_arguments
from shared.runtime.messaging import ERROR_ATTRIBUTE

from .test_pipeline import ehr_event

pytestmark = pytest.mark.slow


def _patient() -> str:
    return f"patient-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def bad_files(media_dir):
    return samples.bad_inputs(media_dir / "bad")


@pytest.mark.parametrize("name", ["random_bytes", "jpeg_named_mp4"])
def test_a_file_that_is_not_its_declared_type_is_refused_at_the_upload(running_stack, bad_files, name):
    """The upload proxy (docs/uploads.md) reads the first bytes: a file that does not start like the
    video it was declared as is refused in words, nothing is stored, and the check-in still waits.
    (Through presigned POSTs S3 cannot look inside: the ingest stage's probe fails the job instead.)"""
    with httpx.Client(timeout=30) as http:
        created = http.post(f"{running_stack.api}/api/v1/analyze", headers=running_stack.auth(), json={
            "patient_id": _patient(), "filename": "bad.mp4", "content_type": "video/mp4"}).json()
        assert created["upload_method"] == "PUT"
        refused = http.put(created["upload_url"], content=bad_files[name].read_bytes(),
                           headers={**running_stack.auth(), "Content-Type": "video/mp4"})
    assert refused.status_code == 422 and refused.json()["detail"] == "the file is not a video/mp4 recording"
    job = running_stack.job(created["job_id"])
    assert job["status"] == "queued"
    stored = running_stack.client("s3").list_objects_v2(Bucket=running_stack.settings.bucket, Prefix=job["s3_key"])
    assert stored.get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    "name, expected",
    [
        ("truncated_index", "truncated or incomplete"),
        ("truncated_data", "the video is truncated at"),
    ],
)
def test_uploaded_bad_media_fails_the_job_with_a_readable_error(running_stack, bad_files, name, expected):
    job_id = running_stack.submit(bad_files[name], _patient())
    job = running_stack.wait_for_job(job_id, timeout=60)
    assert job["status"] == "failed"
    assert expected in job["error"], job["error"]
    assert "Traceback" not in job["error"]
    assert job["completed_at"] and job["progress"] < 100


def test_an_empty_upload_is_refused_and_the_checkin_still_waits(running_stack):
    """The upload proxy, like the presigned POST's policy (as S3 enforces it), asks for at least one
    byte: an empty file is refused at the upload, in words, and the check-in keeps waiting."""
    with httpx.Client(timeout=30) as http:
        created = http.post(f"{running_stack.api}/api/v1/analyze", headers=running_stack.auth(), json={
            "patient_id": _patient(), "filename": "empty.mp4", "content_type": "video/mp4"})
        assert created.status_code == 201, created.text
        job = created.json()
        refused = http.request(**upload_arguments(job, "empty.mp4", b"", "video/mp4", running_stack.auth()))
    assert refused.status_code == 422 and refused.json()["detail"] == "the recording is empty"
    assert running_stack.job(job["job_id"])["status"] == "queued"


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"patient_id": "patient-001", "filename": "checkin.png", "content_type": "image/png"},
         "unsupported content type 'image/png'"),
        ({"patient_id": "patient-001", "filename": "../../etc/passwd.mp4", "content_type": "video/mp4"},
         "filename: the filename must be a plain name"),
        ({"patient_id": "patient-001", "filename": "dir/checkin.mp4", "content_type": "video/mp4"},
         "filename: the filename must be a plain name"),
        ({"patient_id": "p1", "filename": "checkin.mp4", "content_type": "video/mp4"}, "patient_id"),
        ({"patient_id": "patient 001; drop", "filename": "checkin.mp4", "content_type": "video/mp4"}, "patient_id"),
        ({"patient_id": "x" * 101, "filename": "checkin.mp4", "content_type": "video/mp4"}, "patient_id"),
        ({"filename": "checkin.mp4", "content_type": "video/mp4"}, "patient_id: Field required"),
        ({"patient_id": "patient-001", "filename": "c.mp4", "content_type": "video/mp4",
          "metadata": {"pipeline": 1}}, "reserved"),
    ],
)
def test_analyze_api_rejects_bad_requests_with_422(running_stack, body, expected):
    response = httpx.post(f"{running_stack.api}/api/v1/analyze", json=body, headers=running_stack.auth(), timeout=10)
    assert response.status_code == 422
    assert expected in response.json()["detail"]


def test_unknown_job_is_404(running_stack):
    response = httpx.get(f"{running_stack.api}/api/v1/jobs/job-000000000000", headers=running_stack.auth(), timeout=10)
    assert response.status_code == 404


def _send_ingest(running_stack, body: str) -> None:
    sqs = running_stack.client("sqs")
    sqs.send_message(QueueUrl=running_stack.queue_url(running_stack.settings.queue_name("ingest")), MessageBody=body)


def _dead_letter_with(running_stack, marker: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        for message in running_stack.drain_dead_letters("ingest"):
            seen.append(message)
        for message in seen:
            if marker in message["Body"]:
                return message
    raise AssertionError(f"no dead letter containing {marker!r}; saw {[m['Body'][:80] for m in seen]}")


def test_malformed_event_json_is_dead_lettered_with_the_reason(running_stack):
    marker = uuid.uuid4().hex
    _send_ingest(running_stack, '{"specversion": "1.0", "id": "' + marker + '", broken')
    message = _dead_letter_with(running_stack, marker)
    assert "not JSON" in message["MessageAttributes"][ERROR_ATTRIBUTE]["StringValue"]
    assert message["MessageAttributes"]["schizodot_source_queue"]["StringValue"].endswith("ingest")


def test_event_missing_fields_is_dead_lettered_and_its_patient_sees_a_failed_job(running_stack):
    patient = _patient()
    event = json.loads(ehr_event(f"incoming/{DEV_CLINIC}/x.mp4", patient, str(uuid.uuid4())))
    del event["data"]["s3_key"]
    _send_ingest(running_stack, json.dumps(event))
    message = _dead_letter_with(running_stack, patient)
    assert "s3_key: Field required" in message["MessageAttributes"][ERROR_ATTRIBUTE]["StringValue"]
    jobs = running_stack.client("dynamodb").query(
        TableName=running_stack.settings.jobs_table, IndexName="patient_id-created_at-index",
        KeyConditionExpression="patient_id = :p",
        ExpressionAttributeValues={":p": {"S": running_stack.stored_key(patient)}})["Items"]
    assert len(jobs) == 1 and jobs[0]["status"]["S"] == "failed"
    assert "s3_key: Field required" in jobs[0]["error"]["S"]


def test_event_without_cloudevents_attributes_is_dead_lettered(running_stack):
    marker = uuid.uuid4().hex
    _send_ingest(running_stack, json.dumps({"patient_id": "patient-001", "s3_key": marker}))
    message = _dead_letter_with(running_stack, marker)
    assert "CloudEvents" in message["MessageAttributes"][ERROR_ATTRIBUTE]["StringValue"]


def test_event_for_missing_s3_object_fails_the_job(running_stack):
    patient = _patient()
    event_id = str(uuid.uuid4())
    _send_ingest(running_stack, ehr_event(f"incoming/{DEV_CLINIC}/{uuid.uuid4().hex}.mp4", patient, event_id))
    from shared.domain.checkin import job_id_for_event

    job = running_stack.wait_for_job(job_id_for_event("urn:ehr:test", event_id, DEV_CLINIC), timeout=60)
    assert job["status"] == "failed"
    assert "the media file does not exist" in job["error"]
