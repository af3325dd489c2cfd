"""POST /api/v1/analyze with an Idempotency-Key: a retry after a lost answer
gets the same job back, never a second one; the key cannot be reused for
another check-in."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_a_repeated_post_returns_the_same_job(running_stack):
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    body = {"patient_id": patient, "filename": "checkin.mp4", "content_type": "video/mp4"}
    key = {"Idempotency-Key": str(uuid.uuid4())}
    with httpx.Client(timeout=30) as http:
        first = http.post(f"{running_stack.api}/api/v1/analyze", json=body, headers=key)
        again = http.post(f"{running_stack.api}/api/v1/analyze", json=body, headers=key)
        other = http.post(f"{running_stack.api}/api/v1/analyze", json={**body, "filename": "other.mp4"}, headers=key)
        fresh = http.post(f"{running_stack.api}/api/v1/analyze", json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["job_id"] == first.json()["job_id"] and again.json()["s3_key"] == first.json()["s3_key"]
    assert other.status_code == 409 and "Idempotency-Key" in other.json()["detail"]
    assert fresh.status_code == 201 and fresh.json()["job_id"] != first.json()["job_id"]  # no key: a new job
    jobs = running_stack.client("dynamodb").query(
        TableName=running_stack.settings.jobs_table, IndexName="patient_id-created_at-index",
        KeyConditionExpression="patient_id = :p", ExpressionAttributeValues={":p": {"S": patient}})["Items"]
    assert len(jobs) == 2
