"""Finding 5 of issue 19: erasure never touched queues. The ingest dead-letter queue keeps whole
EHR check-in events for 14 days, and S3's upload notifications on the ingest queue name the
patient key. On the running stack: an EHR event of the patient that ingest dead-letters, and one
of another patient; after `DELETE /api/v1/patients/{id}` no queue holds anything of the patient,
and the other patient's dead letter is still there and readable at once (released, not held).
Failed on the code before the fix: the patient's dead letter stayed. (Which messages name a patient,
S3's notifications included, is checked message by message in services/results/erasure/tests/test_erasure.py.)"""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from schizodot.dev_identity import DEV_CLINIC

pytestmark = pytest.mark.slow


def _event(patient: str) -> str:
    """An EHR check-in event ingest refuses (no s3_key) and dead-letters, with the patient in it."""
    return json.dumps({
        "specversion": "1.0", "id": str(uuid.uuid4()), "source": "urn:ehr:test", "type":
        "org.schizodot.checkin.submitted.v1", "subject": patient, "datacontenttype": "application/json",
        "data": {"clinic_id": DEV_CLINIC, "patient_id": patient, "content_type": "video/mp4"}})


def _peek(sqs, url: str) -> list[str]:
    """Every body on the queue now, each released again at once."""
    bodies, held = [], []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, VisibilityTimeout=30,
                                       WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        bodies += [m["Body"] for m in messages]
        held += [m["ReceiptHandle"] for m in messages]
    for handle in held:
        sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handle, VisibilityTimeout=0)
    return bodies


def test_erasure_touches_queues(running_stack):
    patient, other = f"patient-{uuid.uuid4().hex[:8]}", f"patient-{uuid.uuid4().hex[:8]}"
    sqs = running_stack.client("sqs")
    ingest = running_stack.queue_url(running_stack.settings.queue_name("ingest"))
    dead_letters = running_stack.queue_url(running_stack.settings.dead_letter_queue_name("ingest"))
    for who in (patient, other):
        sqs.send_message(QueueUrl=ingest, MessageBody=_event(who))
    deadline = time.monotonic() + 60
    while not all(any(who in body for body in _peek(sqs, dead_letters)) for who in (patient, other)):
        assert time.monotonic() < deadline, "ingest did not dead-letter the events"
        time.sleep(0.5)

    erased = httpx.delete(f"{running_stack.results_api}/api/v1/patients/{patient}",
                          headers=running_stack.auth("dev-admin"), timeout=60)
    assert erased.status_code == 200, erased.text

    queued = "\n".join(body for url in sqs.list_queues()["QueueUrls"] if "test-ehr" not in url
                       for body in _peek(sqs, url))
    assert patient not in queued and running_stack.stored_key(patient) not in queued
    assert other in "\n".join(_peek(sqs, dead_letters))  # another patient's dead letter stays, readable at once
    assert erased.json()["counts"]["queued_messages"] >= 1  # on the receipt
    for message in sqs.receive_message(QueueUrl=dead_letters, MaxNumberOfMessages=10).get("Messages", []):
        if other in message["Body"]:
            sqs.delete_message(QueueUrl=dead_letters, ReceiptHandle=message["ReceiptHandle"])
