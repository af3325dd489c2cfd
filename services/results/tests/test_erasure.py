"""Erasure on in-memory adapters: everything of the patient goes (alerts and the clinic's patient list
included), counted once in the receipt, idempotent; the same id in another clinic is untouched.
(tests/integration/test_access.py erases on the running stack and lists every table and prefix.)"""

from __future__ import annotations

import asyncio

from services.results.alerts.roster import InMemoryRoster
from services.results.alerts.store import Alert, InMemoryAlertStore, alert_id_for
from services.results.erasure import ErasureDeps, ErasureRequested, MemoryErasures, erase
from shared.audit import AuditTrail
from shared.fakes import InMemoryHistory, InMemoryJobs, InMemoryPatientLinks, MemoryAuditStore, MemoryStorage
from shared.job import new_job


def _alert(clinic: str, patient: str) -> Alert:
    at = "2026-11-02T10:00:00.000000Z"
    return Alert(clinic_id=clinic, alert_id=alert_id_for(clinic, patient, "risk", "job-1", at), patient_id=patient,
                 rule="risk", severity="high", title="Risk level high", summary="s", triggered_at=at, created_at=at)


def test_erasure_removes_the_patients_alerts_and_roster_row_and_only_theirs():
    jobs, history, links = InMemoryJobs(), InMemoryHistory(), InMemoryPatientLinks()
    alerts, roster, erasures = InMemoryAlertStore(), InMemoryRoster(), MemoryErasures()
    audit_store = MemoryAuditStore()
    swept = []

    async def schedule_sweep(request):
        swept.append(request)

    deps = ErasureDeps(jobs=jobs, storage=MemoryStorage(), results=history, history=history, links=links,
                       erasures=erasures, audit=AuditTrail(audit_store, "k", "schizodot-results"),
                       schedule_sweep=schedule_sweep, alerts=alerts, roster=roster)

    async def scenario():
        for clinic, job_id in (("clinic-a", "job-00000000000a"), ("clinic-b", "job-00000000000b")):
            # two clinics, one patient id
            await jobs.create(new_job(job_id, patient_id=f"{clinic}.patient-001", s3_key="k", filename="f",
                                      content_type="video/mp4", created_at="2026-11-01T10:00:00Z", message="m",
                                      source="api", clinic_id=clinic))
            await history.save({"user_id": f"{clinic}.patient-001", "timestamp": "2026-11-01T10:00:00Z",
                                "job_id": "job-1", "clinic_id": clinic, "results": {}})
            await alerts.put_new(_alert(clinic, "patient-001"))
            await roster.record_checkin(clinic, "patient-001", "job-1", "2026-11-01T10:00:00Z")
        await erasures.create("erasure-0000000000000001", "clinic-a", "pt-x", "dev-admin")
        request = ErasureRequested(erasure_id="erasure-0000000000000001", clinic_id="clinic-a",
                                   patient_id="patient-001")
        await erase(request, deps)
        await erase(request, deps)  # a duplicate delivery
        return await erasures.get("erasure-0000000000000001")

    record = asyncio.run(scenario())
    assert record["status"] == "done"
    assert record["counts"] == {"media": 0, "artifacts": 0, "evidence_frames": 0, "unfinished_uploads": 0, "jobs": 1,
                                "results": 1, "patient_links": 0, "alerts": 1, "clinic_patients": 1}
    assert asyncio.run(alerts.for_patient("clinic-a", "patient-001")) == []
    assert asyncio.run(roster.get("clinic-a", "patient-001")) is None
    assert len(asyncio.run(alerts.for_patient("clinic-b", "patient-001"))) == 1  # the other clinic's namesake
    assert asyncio.run(roster.get("clinic-b", "patient-001")) is not None
    assert [r["action"] for r in audit_store.records.values()] == ["erasure.completed"]
    assert len(swept) == 1 and swept[0].sweep
