"""Finding 9 of issue 19: an EHR event's job id is 128 bits of SHA-256 over fields the sender
chooses, and an event naming a job that is another clinic's or another patient's is refused
(dead-lettered by the runner, 409 at the API), never merged into that job. The collision is
made here by storing another clinic's job under the very id the event names."""

from __future__ import annotations

import asyncio
import json

import pytest
from fastapi.testclient import TestClient

from schizodot.dev_identity import DevIssuer
from services.ingest.api import IngestAccess, create_app
from services.ingest.handlers import INGEST, IngestDeps
from services.ingest.settings import CheckinLimits, UploadPolicy
from shared.domain.checkin import JOB_ID_PATTERN, job_id_for_event, new_job_id
from shared.domain.errors import MalformedMessage
from shared.domain.job import new_job
from shared.fakes import FakeAdapters, InMemoryApiKeys, InMemoryPatientLinks, MemoryAuditStore, deliver
from shared.identity.audit import AuditTrail
from shared.identity.auth import Authenticator
from shared.identity.ratelimit import MemoryRateLimiter
from shared.identity.tokens import AuthSettings
from shared.runtime.events import CHECKIN_SUBMITTED


def _event(event_id: str, clinic: str, **data) -> dict:
    return {"specversion": "1.0", "id": event_id, "source": "urn:ehr:collide", "type": CHECKIN_SUBMITTED,
            "datacontenttype": "application/json", "data": {"clinic_id": clinic, "patient_id": "patient-777",
                                                           "s3_key": f"incoming/{clinic}/x.mp4", **data}}


def _victim(job_id: str):
    """Clinic A's check-in, stored under the id clinic B's event will name."""
    return new_job(job_id, patient_id="clinic-a.patient-001", clinic_id="clinic-a", s3_key="uploads/a/x.mp4",
                   filename="x.mp4", content_type="video/mp4", created_at="2026-12-01T00:00:00.000000Z",
                   message="Waiting for the upload", source="api")


def test_job_id_collision_is_widened_to_128_bits_and_old_ids_stay_valid():
    for job_id in (job_id_for_event("urn:ehr:a", "1", "clinic-a"), new_job_id()):
        assert JOB_ID_PATTERN.match(job_id) and len(job_id.removeprefix("job-")) == 32
    assert JOB_ID_PATTERN.match("job-abc123def456")  # ids made before stay readable


@pytest.mark.parametrize("readable", [True, False])
def test_job_id_collision_in_the_runner_is_refused_not_merged(readable):
    fakes = FakeAdapters()
    body = _event("evt-1", "clinic-b") if readable else _event("evt-1", "clinic-b", s3_key="incoming/clinic-b/x.bin")
    job_id = job_id_for_event("urn:ehr:collide", "evt-1", "clinic-b")

    async def scenario():
        await fakes.jobs.create(_victim(job_id))
        runner = fakes.runner(INGEST, IngestDeps(UploadPolicy(), fakes.storage))
        with pytest.raises(MalformedMessage, match="another check-in"):  # dead-lettered by the consumer
            await deliver(runner, json.dumps(body))
        return await fakes.jobs.get(job_id)

    job = asyncio.run(scenario())
    assert (job.clinic_id, job.patient_id, job.status, job.s3_key) == (
        "clinic-a", "clinic-a.patient-001", "queued", "uploads/a/x.mp4")
    assert job.pipeline.stages == {} and job.error is None  # neither claimed nor failed
    assert fakes.publisher.sent == []


def test_job_id_collision_at_the_events_api_is_409(tmp_path):
    issuer = DevIssuer(tmp_path)
    auth = Authenticator(AuthSettings(**{k.removeprefix("SCHIZODOT_AUTH_").lower(): v
                                         for k, v in issuer.environment().items()}),
                         InMemoryApiKeys(), InMemoryPatientLinks())
    fakes = FakeAdapters()
    queued: list[str] = []

    async def enqueue(body: str) -> str:
        queued.append(body)
        return "m-1"

    app = create_app(UploadPolicy(), fakes.jobs, fakes.storage.presigned_post,
                     IngestAccess(auth, AuditTrail(MemoryAuditStore(), "unit-test-key", "test"), MemoryRateLimiter(),
                                  InMemoryPatientLinks(), CheckinLimits()), enqueue_event=enqueue)
    clinic = "dev-clinic"  # the development EHR's
    job_id = job_id_for_event("urn:ehr:collide", "evt-2", clinic)
    asyncio.run(fakes.jobs.create(_victim(job_id)))
    with TestClient(app) as http:
        refused = http.post("/api/v1/events", headers={"Authorization": f"Bearer {issuer.mint('dev-ehr')}"},
                            json=_event("evt-2", clinic))
        assert refused.status_code == 409 and queued == []
        fresh = http.post("/api/v1/events", headers={"Authorization": f"Bearer {issuer.mint('dev-ehr')}"},
                          json=_event("evt-3", clinic))
        assert fresh.status_code == 202 and fresh.json()["job_id"] == job_id_for_event("urn:ehr:collide", "evt-3", clinic)
