"""Erasure on in-memory adapters: everything of the patient goes (alerts and the clinic's patient list
included), counted once in the receipt, idempotent; the same id in another clinic is untouched.
(tests/integration/test_access.py erases on the running stack and lists every table and prefix.)"""

from __future__ import annotations

import asyncio

import pytest

from services.results.alerts import InMemoryRoster
from services.results.alerts.store import Alert, InMemoryAlertStore, alert_id_for
from services.results.erasure import ErasureDeps, ErasureRequested, MemoryErasures, erase
from shared.domain.job import new_job
from shared.fakes import InMemoryHistory, InMemoryJobs, InMemoryPatientLinks, MemoryAuditStore, MemoryStorage
from shared.identity.audit import AuditTrail
from tests.conftest import _dummy_aws_credentials, aws_server  # noqa: F401


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
                                "results": 1, "patient_links": 0, "alerts": 1, "clinic_patients": 1,
                                "queued_messages": 0}
    assert asyncio.run(alerts.for_patient("clinic-a", "patient-001")) == []
    assert asyncio.run(roster.get("clinic-a", "patient-001")) is None
    assert len(asyncio.run(alerts.for_patient("clinic-b", "patient-001"))) == 1  # the other clinic's namesake
    assert asyncio.run(roster.get("clinic-b", "patient-001")) is not None
    assert [r["action"] for r in audit_store.records.values()] == ["erasure.completed"]
    assert len(swept) == 1 and swept[0].sweep


class _CrashOnceStorage(MemoryStorage):
    """Storage whose first delete dies (the worker crashed mid-erasure); later ones work."""

    def __init__(self) -> None:
        super().__init__()
        self.crashed = False

    async def delete_keys(self, keys, bucket=None):
        if not self.crashed:
            self.crashed = True
            raise ConnectionError("the worker died mid-erasure")
        return await super().delete_keys(keys, bucket)


def _deps(storage, jobs, erasures, audit_store, swept) -> ErasureDeps:
    history = InMemoryHistory()

    async def schedule_sweep(request):
        swept.append(request)

    return ErasureDeps(jobs=jobs, storage=storage, results=history, history=history, links=InMemoryPatientLinks(),
                       erasures=erasures, audit=AuditTrail(audit_store, "k", "schizodot-results"),
                       schedule_sweep=schedule_sweep)


def test_a_job_in_flight_is_failed_then_erased_and_what_its_stage_writes_late_is_swept():
    jobs, storage, erasures, audit_store, swept = InMemoryJobs(), MemoryStorage(), MemoryErasures(), MemoryAuditStore(), []
    deps = _deps(storage, jobs, erasures, audit_store, swept)
    job_id, key = "job-0000000000f1", "uploads/clinic-a.patient-001/job-0000000000f1.mp4"
    failed = []
    real_fail = jobs.fail

    async def fail(job_id_, message, stage, **kwargs):
        failed.append((job_id_, message, stage))
        return await real_fail(job_id_, message, stage, **kwargs)

    jobs.fail = fail

    async def scenario():
        await jobs.create(new_job(job_id, patient_id="clinic-a.patient-001", s3_key=key, filename="f",
                                  content_type="video/mp4", created_at="2026-11-01T10:00:00Z", message="m",
                                  source="api", clinic_id="clinic-a"))
        await storage.put_bytes(key, b"media", "video/mp4")
        await jobs.claim_stage(job_id, "vision", "m-vision", "x")  # vision is mid-analysis
        await erasures.create("erasure-00000000000000f1", "clinic-a", "pt-x", "dev-admin")
        request = ErasureRequested(erasure_id="erasure-00000000000000f1", clinic_id="clinic-a",
                                   patient_id="patient-001")
        await erase(request, deps)
        after_erasure = (await jobs.get(job_id), await storage.list_keys(""))
        await storage.put_json(f"artifacts/{job_id}/vision.json", {"late": True})  # the stage wrote before it stopped
        await erase(swept[0], deps)
        return after_erasure, await storage.list_keys(""), await erasures.get("erasure-00000000000000f1")

    (job_after, keys_after), keys_at_end, record = asyncio.run(scenario())
    assert failed == [(job_id, "the patient's data was erased", "erasure")]  # stopped before anything was deleted
    assert job_after is None and keys_after == [] and keys_at_end == []
    assert record["counts"]["jobs"] == 1 and record["counts"]["media"] == 1
    assert record["late"]["artifacts"] == 1
    assert [r["action"] for r in audit_store.records.values()] == ["erasure.completed", "erasure.late_sweep"]


def test_an_erasure_that_crashes_midway_resumes_and_counts_once():
    jobs, storage, erasures, audit_store, swept = (InMemoryJobs(), _CrashOnceStorage(), MemoryErasures(),
                                                   MemoryAuditStore(), [])
    deps = _deps(storage, jobs, erasures, audit_store, swept)
    job_id, key = "job-0000000000f2", "uploads/clinic-a.patient-002/job-0000000000f2.mp4"

    async def scenario():
        await jobs.create(new_job(job_id, patient_id="clinic-a.patient-002", s3_key=key, filename="f",
                                  content_type="video/mp4", created_at="2026-11-01T10:00:00Z", message="m",
                                  source="api", clinic_id="clinic-a"))
        await storage.put_bytes(key, b"media", "video/mp4")
        await storage.put_json(f"artifacts/{job_id}/audio.json", {})
        await erasures.create("erasure-00000000000000f2", "clinic-a", "pt-y", "dev-admin")
        request = ErasureRequested(erasure_id="erasure-00000000000000f2", clinic_id="clinic-a",
                                   patient_id="patient-002")
        with pytest.raises(ConnectionError):
            await erase(request, deps)  # the first delivery dies after the inventory was recorded
        midway = await erasures.get("erasure-00000000000000f2")
        await erase(request, deps)  # SQS delivers it again
        return midway, await erasures.get("erasure-00000000000000f2"), await storage.list_keys("")

    midway, record, keys = asyncio.run(scenario())
    assert midway["status"] == "running" and midway["counts"]["media"] == 1 and midway["counts"]["artifacts"] == 1
    assert record["status"] == "done" and record["counts"] == midway["counts"]  # counted once, by the first run
    assert keys == []
    assert [r["action"] for r in audit_store.records.values()] == ["erasure.completed"] and len(swept) == 1


# --- queued messages (issue 19, finding 5) ------------------------------------------------------------

def _s3_notification(key: str) -> str:
    import json
    from urllib.parse import quote_plus

    return json.dumps({"Records": [{"eventName": "ObjectCreated:Post",
                                    "s3": {"bucket": {"name": "media"}, "object": {"key": quote_plus(key)}}}]})


def _cloud_event(data: dict) -> str:
    from shared.runtime.events import encode_event

    return encode_event("org.schizodot.test.v1", "urn:test", "s", data)


MINE = "job-" + "a" * 32
QUEUED = {
    "upload of the patient": (_s3_notification(f"uploads/clinic-a.patient-001/{MINE}/20261201T100000Z_c.mp4"), True),
    "upload of their namesake elsewhere": (
        _s3_notification(f"uploads/clinic-b.patient-001/job-{'b' * 32}/20261201T100000Z_c.mp4"), False),
    "upload of patient-0011": (
        _s3_notification(f"uploads/clinic-a.patient-0011/job-{'c' * 32}/20261201T100000Z_c.mp4"), False),
    "their EHR event": (_cloud_event({"clinic_id": "clinic-a", "patient_id": "patient-001", "s3_key": "x"}), True),
    "their namesake's EHR event": (_cloud_event({"clinic_id": "clinic-b", "patient_id": "patient-001"}), False),
    "a stage message of their job": (_cloud_event({"job_id": MINE}), True),
    "a stage message of the earlier shape": (_cloud_event({"job_id": "job-" + "d" * 32,
                                                          "s3_key": "uploads/clinic-a.patient-001/x/y_c.mp4"}), True),
    "another job's stage message": (_cloud_event({"job_id": "job-" + "e" * 32}), False),
    "unreadable, theirs": ('{"clinic_id": "clinic-a", "patient_id": "patient-001", broken', True),
    "unreadable, another's": ('{"clinic_id": "clinic-a", "patient_id": "patient-0011", broken', False),
}


@pytest.mark.parametrize("case", sorted(QUEUED))
def test_a_queued_message_names_the_patient_only_when_it_is_theirs(case):
    from services.results.erasure import names_patient

    body, theirs = QUEUED[case]
    assert names_patient(body, "clinic-a", "patient-001", [MINE]) is theirs


def test_erasure_removes_the_patients_queued_messages_and_counts_them():
    from services.results.erasure import MemoryQueuedMessages

    jobs, history, erasures, swept = InMemoryJobs(), InMemoryHistory(), MemoryErasures(), []
    queues = MemoryQueuedMessages({"ingest-dlq": [body for body, _ in QUEUED.values()]})

    async def schedule_sweep(request):
        swept.append(request)

    deps = ErasureDeps(jobs=jobs, storage=MemoryStorage(), results=history, history=history,
                       links=InMemoryPatientLinks(), erasures=erasures,
                       audit=AuditTrail(MemoryAuditStore(), "k", "schizodot-results"), schedule_sweep=schedule_sweep,
                       queues=queues)

    async def scenario():
        await jobs.create(new_job(MINE, patient_id="clinic-a.patient-001", s3_key="k", filename="f",
                                  content_type="video/mp4", created_at="2026-11-01T10:00:00Z", message="m",
                                  source="api", clinic_id="clinic-a"))
        await erasures.create("erasure-0000000000000002", "clinic-a", "pt-x", "dev-admin")
        request = ErasureRequested(erasure_id="erasure-0000000000000002", clinic_id="clinic-a",
                                   patient_id="patient-001")
        await erase(request, deps)
        queues.queues["ingest-dlq"].append(_cloud_event({"job_id": MINE}))  # dead-lettered after the erasure
        await erase(swept[0], deps)  # the late sweep
        return await erasures.get("erasure-0000000000000002")

    record = asyncio.run(scenario())
    theirs = sum(1 for _, mine in QUEUED.values() if mine)
    assert record["counts"]["queued_messages"] == theirs and record["late"]["queued_messages"] == 1
    assert queues.queues["ingest-dlq"] == [body for body, mine in QUEUED.values() if not mine]


@pytest.mark.server
def test_sqs_queued_messages_deletes_the_matching_and_releases_the_rest_at_once(aws_server):
    """On SQS (moto's server over HTTP): more messages than one receive returns, the patient's deleted,
    every other one readable again right after (visibility 0), none lost."""
    import uuid

    from services.results.erasure import SqsQueuedMessages
    from shared.aws.clients import AsyncClients, sync_client

    sqs = sync_client(aws_server, "sqs")
    url = sqs.create_queue(QueueName=f"erasure-test-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    bodies = [f'{{"data": {{"job_id": "job-{n:032x}"}}}}' for n in range(25)]
    for body in bodies:
        sqs.send_message(QueueUrl=url, MessageBody=body)
    theirs = {bodies[n] for n in (0, 7, 13, 24)}

    async def scenario():
        async with AsyncClients(aws_server) as clients:
            return await SqsQueuedMessages(clients.sqs, (url,)).remove(lambda body: body in theirs)

    assert asyncio.run(scenario()) == 4
    left = []
    while True:
        messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
        if not messages:
            break
        left += [m["Body"] for m in messages]
    assert sorted(left) == sorted(set(bodies) - theirs)
    sqs.delete_queue(QueueUrl=url)
