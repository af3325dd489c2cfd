"""DELETE /api/v1/patients/{id} through the results API (in-memory adapters, real identity): an erasure
still running answers 202 with a Location that reports its state as the worker moves it on."""

from __future__ import annotations

import asyncio

import httpx

from schizodot.dev_identity import AUDIENCE, ISSUER, DevIssuer
from services.results.api import ResultsAccess, create_app
from services.results.erasure import ErasureDeps, ErasureRequested, MemoryErasures, erase
from services.results.settings import ResultsSettings
from shared.domain.job import new_job
from shared.fakes import (
    InMemoryApiKeys,
    InMemoryHistory,
    InMemoryJobs,
    InMemoryPatientLinks,
    MemoryAuditStore,
    MemoryStorage,
)
from shared.identity.audit import AuditTrail
from shared.identity.auth import Authenticator
from shared.identity.tokens import AuthSettings
from shared.runtime.events import decode_event, event_data


def test_a_running_erasure_answers_202_with_a_location_that_reports_its_state(tmp_path):
    issuer = DevIssuer(tmp_path).ensure()
    links, jobs, history, storage = InMemoryPatientLinks(), InMemoryJobs(), InMemoryHistory(), MemoryStorage()
    audit = AuditTrail(MemoryAuditStore(), "erasure-api-test-key", "schizodot-results")
    erasures, queued = MemoryErasures(), []

    async def enqueue(body: str) -> str:
        queued.append(body)
        return f"m-{len(queued)}"

    authenticator = Authenticator(AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=issuer.jwks_path),
                                  InMemoryApiKeys(), links)
    app = create_app(ResultsSettings(erasure_wait_seconds=0), jobs, history,  # no wait: the worker has not run
                     ResultsAccess(authenticator, audit, InMemoryApiKeys(), erasures, enqueue))
    deps = ErasureDeps(jobs=jobs, storage=storage, results=history, history=history, links=links,
                       erasures=erasures, audit=audit, schedule_sweep=lambda request: asyncio.sleep(0))

    def admin(clinic: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {issuer.mint('dev-admin', schizodot_clinic=clinic)}"}

    async def scenario():
        key = "uploads/clinic-north.patient-007/job-0000000000a1.mp4"
        await jobs.create(new_job("job-0000000000a1", patient_id="clinic-north.patient-007", s3_key=key, filename="f",
                                  content_type="video/mp4", created_at="2026-11-01T10:00:00Z", message="m",
                                  source="api", clinic_id="clinic-north"))
        await storage.put_bytes(key, b"media", "video/mp4")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://results") as http:
            response = await http.delete("/api/v1/patients/patient-007", headers=admin("clinic-north"))
            assert response.status_code == 202, response.text
            receipt = response.json()
            location = response.headers["location"]
            assert location == f"/api/v1/erasures/{receipt['erasure_id']}"
            assert receipt["status"] == "requested" and receipt["patient_id"] == "patient-007"

            before = await http.get(location, headers=admin("clinic-north"))
            assert before.status_code == 200 and before.json()["status"] == "requested"
            assert before.json()["counts"] is None
            # Another clinic's admin following the same Location finds nothing, as for a missing erasure.
            elsewhere = await http.get(location, headers=admin("clinic-south"))
            assert elsewhere.status_code == 404

            [body] = queued  # the worker takes the request off the queue and erases
            request = event_data(decode_event(body), ErasureRequested, ErasureRequested.TYPE)
            assert (request.erasure_id, request.clinic_id, request.patient_id) == (
                receipt["erasure_id"], "clinic-north", "patient-007")
            await erase(request, deps)

            after = await http.get(location, headers=admin("clinic-north"))
            assert after.status_code == 200
            done = after.json()
            assert done["status"] == "done" and done["finished_at"]
            assert done["counts"]["jobs"] == 1 and done["counts"]["media"] == 1
            assert await jobs.get("job-0000000000a1") is None and await storage.list_keys("") == []

    asyncio.run(scenario())
