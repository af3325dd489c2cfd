"""POST /api/v1/analyze with an Idempotency-Key: a retry after a lost answer
gets the same job back, never a second one; the key cannot be reused for
another check-in, and is scoped to the caller's clinic."""

from __future__ import annotations

import uuid

import httpx
import pytest

from schizodot.dev_identity import OTHER_CLINIC

pytestmark = pytest.mark.slow


def test_a_repeated_post_returns_the_same_job(running_stack):
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    body = {"patient_id": patient, "filename": "checkin.mp4", "content_type": "video/mp4"}
    uploader = running_stack.auth("dev-uploader")
    key = {"Idempotency-Key": str(uuid.uuid4())}
    analyze = f"{running_stack.api}/api/v1/analyze"
    with httpx.Client(timeout=30) as http:
        first = http.post(analyze, json=body, headers={**uploader, **key})
        again = http.post(analyze, json=body, headers={**uploader, **key})
        other = http.post(analyze, json={**body, "filename": "other.mp4"}, headers={**uploader, **key})
        fresh = http.post(analyze, json=body, headers=uploader)
        # Another clinic's app that happens to send the same key for its own patient of that id: its own job.
        elsewhere = http.post(analyze, json=body, headers={**running_stack.auth("other-uploader"), **key})
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["job_id"] == first.json()["job_id"] and again.json()["s3_key"] == first.json()["s3_key"]
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    assert fresh.status_code == 201 and fresh.json()["job_id"] != first.json()["job_id"]  # no key: a new job
    assert elsewhere.status_code == 201 and elsewhere.json()["job_id"] not in (first.json()["job_id"],
                                                                                fresh.json()["job_id"])
    dynamodb = running_stack.client("dynamodb")

    def stored_jobs(clinic_key: str) -> list[dict]:
        return dynamodb.query(
            TableName=running_stack.settings.jobs_table, IndexName="patient_id-created_at-index",
            KeyConditionExpression="patient_id = :p", ExpressionAttributeValues={":p": {"S": clinic_key}})["Items"]

    assert len(stored_jobs(running_stack.stored_key(patient))) == 2
    assert [item["job_id"]["S"] for item in stored_jobs(running_stack.stored_key(patient, OTHER_CLINIC))] == [
        elsewhere.json()["job_id"]]
