"""PHI is never served unaudited: the APIs on in-memory adapters with a real signed token,
and an audit store that fails."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from schizodot.dev_identity import DevIssuer
from services.ingest.api import IngestAccess, create_app as ingest_app
from services.ingest.settings import CheckinLimits, UploadPolicy
from services.results.api import ResultsAccess, create_app as results_app
from services.results.erasure import MemoryErasures
from services.results.settings import ResultsSettings
from shared.audit import AuditTrail
from shared.auth import Authenticator, AuthSettings
from shared.fakes import InMemoryApiKeys, InMemoryHistory, InMemoryJobs, InMemoryPatientLinks, MemoryAuditStore, MemoryStorage
from shared.job import new_job
from shared.ratelimit import MemoryRateLimiter

JOB = "job-0123456789ab"


def _world(tmp_path):
    issuer = DevIssuer(tmp_path)
    auth = Authenticator(AuthSettings(**{k.removeprefix("SCHIZODOT_AUTH_").lower(): v
                                         for k, v in issuer.environment().items()}),
                         InMemoryApiKeys(), InMemoryPatientLinks())
    store, jobs, history = MemoryAuditStore(), InMemoryJobs(), InMemoryHistory()
    asyncio.run(jobs.create(new_job(JOB, patient_id="dev-clinic.patient-001", s3_key="k", filename="x.mp4",
                                    content_type="video/mp4", created_at="2026-01-01T00:00:00Z", message="m",
                                    source="api", clinic_id="dev-clinic")))
    audit = AuditTrail(store, "unit-test-key", "test")
    return issuer, auth, store, jobs, history, audit


def test_results_are_not_served_when_the_audit_record_cannot_be_written(tmp_path):
    issuer, auth, store, jobs, history, audit = _world(tmp_path)

    async def never(_body: str) -> str:
        raise AssertionError("no erasure here")

    app = results_app(ResultsSettings(), jobs, history,
                      ResultsAccess(auth, audit, InMemoryApiKeys(), MemoryErasures(), never))
    headers = {"Authorization": f"Bearer {issuer.mint('dev-clinician')}"}
    with TestClient(app) as client:
        served = client.get(f"/api/v1/jobs/{JOB}", headers=headers)
        assert served.status_code == 200 and served.json()["patient_id"] == "patient-001"
        assert served.headers["x-request-id"]
        [record] = store.records.values()
        assert record["action"] == "job.read" and record["request_id"] == served.headers["x-request-id"]
        store.failing = True
        refused = client.get(f"/api/v1/jobs/{JOB}", headers=headers)
        assert refused.status_code == 503 and refused.json() == {"detail": "the audit trail is unavailable; try again"}
        assert "patient" not in refused.text and len(store.records) == 1


def test_no_checkin_is_created_when_the_audit_record_cannot_be_written(tmp_path):
    issuer, auth, store, jobs, _history, audit = _world(tmp_path)
    storage = MemoryStorage()
    app = ingest_app(UploadPolicy(), jobs, storage.presigned_post,
                     IngestAccess(auth, audit, MemoryRateLimiter(), InMemoryPatientLinks(), CheckinLimits()))
    store.failing = True
    with TestClient(app) as client:
        refused = client.post("/api/v1/analyze", headers={"Authorization": f"Bearer {issuer.mint('dev-uploader')}"},
                              json={"patient_id": "patient-002", "filename": "c.mp4", "content_type": "video/mp4"})
    assert refused.status_code == 503 and "upload_url" not in refused.text
    assert asyncio.run(jobs.list_for_patient("dev-clinic.patient-002")) == []  # audited first, then created
