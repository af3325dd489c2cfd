"""The rest of the in-memory fakes' contract (shared.fakes, services.results.erasure.MemoryErasures):
the erasure methods of storage, jobs and history, and the API-key, patient-link, audit, erasure and
rate-limit stores, each test run on the fake and on the real adapter against moto's server over HTTP,
so the fast tests' fakes cannot drift from what the services run on. (The other methods of storage,
jobs and history: test_adapters.py and test_jobs_repository.py.)"""

from __future__ import annotations

import re
import uuid

import pytest

from services.results.erasure import DynamoErasures, MemoryErasures, new_erasure_id
from services.results.stage.writer import ResultsWriter
from shared.aws.history import PatientHistory
from shared.aws.jobs import JobsRepository
from shared.aws.storage import Storage
from shared.domain.job import new_job
from shared.fakes import (
    InMemoryApiKeys,
    InMemoryHistory,
    InMemoryJobs,
    InMemoryPatientLinks,
    MemoryAuditStore,
    MemoryStorage,
)
from shared.identity.audit import AuditRecord, S3AuditStore
from shared.identity.credentials import DynamoApiKeys, DynamoPatientLinks, sha256
from shared.identity.principal import Role, patient_key
from shared.identity.ratelimit import DynamoRateLimiter, MemoryRateLimiter
from tests.conftest import CONTRACT_CASES, fake_or_real


def _clinic() -> str:
    return f"clinic-{uuid.uuid4().hex[:8]}"  # moto's server lives for the session: each test its own clinic


# --- erasure methods of storage, jobs and history ------------------------------------------------


@pytest.fixture(params=CONTRACT_CASES)
def with_storage(request):
    return fake_or_real(request, MemoryStorage, lambda settings, aws: Storage(aws.s3, settings.bucket))


def test_storage_lists_a_prefix_and_deletes_exactly_the_keys_asked_for(with_storage):
    ours, theirs = f"uploads/{_clinic()}.p1/", f"uploads/{_clinic()}.p2/"

    async def body(storage):
        for name in ("b.mp4", "a.mp4", "c/evidence.jpg"):
            await storage.put_bytes(ours + name, b"x", "application/octet-stream")
        await storage.put_bytes(theirs + "a.mp4", b"y", "video/mp4")
        listed = await storage.list_keys(ours)
        deleted = await storage.delete_keys([ours + "a.mp4", ours + "c/evidence.jpg", ours + "never-there"])
        nothing = await storage.delete_keys([])
        # Objects are not open multipart uploads: nothing to count or abort here.
        uploads = (await storage.unfinished_uploads(ours), await storage.abort_uploads(ours))
        return listed, deleted, nothing, uploads, await storage.list_keys(ours), await storage.list_keys(theirs)

    listed, deleted, nothing, uploads, left, other = with_storage(body)
    assert listed == [ours + "a.mp4", ours + "b.mp4", ours + "c/evidence.jpg"]  # in key order, as S3 lists
    assert deleted == 3 and nothing == 0  # how many were asked for, a missing one no error
    assert uploads == (0, 0)
    assert left == [ours + "b.mp4"] and other == [theirs + "a.mp4"]


@pytest.fixture(params=CONTRACT_CASES)
def with_jobs(request):
    return fake_or_real(request, InMemoryJobs, lambda settings, aws: JobsRepository(aws.dynamodb, settings.jobs_table))


def test_deleting_a_job_removes_it_once_and_only_it(with_jobs):
    clinic = _clinic()
    patient = f"{clinic}.patient-1"
    erased, kept = (f"job-{uuid.uuid4().hex[:12]}" for _ in range(2))

    async def body(jobs):
        for job_id, created in ((erased, "2026-11-01T10:00:00Z"), (kept, "2026-11-02T10:00:00Z")):
            await jobs.create(new_job(job_id, patient_id=patient, s3_key=f"uploads/{patient}/{job_id}.mp4",
                                      filename="f.mp4", content_type="video/mp4", created_at=created, message="m",
                                      source="api", clinic_id=clinic))
        first, again = await jobs.delete(erased), await jobs.delete(erased)
        listed = [job.job_id for job in await jobs.list_for_patient(patient)]
        return first, again, await jobs.get(erased), listed, await jobs.delete(f"job-{uuid.uuid4().hex[:12]}")

    first, again, gone, listed, unknown = with_jobs(body)
    assert (first, again, unknown) == (True, False, False)
    assert gone is None and listed == [kept]


class _UsersTable:
    def __init__(self, settings, aws) -> None:
        self._reader = PatientHistory(aws.dynamodb, settings.users_table)
        self._writer = ResultsWriter(aws.dynamodb, settings.users_table)

    def __getattr__(self, name):
        return getattr(self._writer if name in ("save", "delete_patient") else self._reader, name)


@pytest.fixture(params=CONTRACT_CASES)
def with_history(request):
    return fake_or_real(request, InMemoryHistory, _UsersTable)


def test_erasing_a_patients_history_removes_every_item_of_theirs_and_no_one_elses(with_history):
    clinic = _clinic()
    ours, theirs = patient_key(clinic, "patient-1"), patient_key(clinic, "patient-2")
    items = [{"user_id": user, "timestamp": f"2026-01-0{day}T00:00:00.000000Z", "job_id": f"job-{day:012x}",
              "results": {"score": day}} for user, day in ((ours, 1), (ours, 2), (ours, 3), (theirs, 4))]

    async def body(history):
        for item in items:
            await history.save(item)
        erased, again = await history.delete_patient(ours), await history.delete_patient(ours)
        return erased, again, await history.latest(ours), [i["job_id"] for i in await history.latest(theirs)]

    erased, again, left, other = with_history(body)
    assert (erased, again) == (3, 0) and left == [] and other == ["job-000000000004"]


# --- identity: API keys and patient links --------------------------------------------------------


@pytest.fixture(params=CONTRACT_CASES)
def with_api_keys(request):
    return fake_or_real(request, InMemoryApiKeys, lambda settings, aws: DynamoApiKeys(aws.dynamodb,
                                                                                       settings.api_keys_table))


def test_api_keys_are_stored_hashed_listed_per_clinic_and_revoked_once_by_their_clinic(with_api_keys):
    clinic, other = _clinic(), _clinic()

    async def body(keys):
        key, whole = await keys.create("ehr bridge", Role.EHR_INTEGRATION, clinic, "dev-admin", expires_in=3600)
        forever, _ = await keys.create("uploader", Role.UPLOADER, clinic, "dev-admin")
        theirs, _ = await keys.create("theirs", Role.CLINICIAN, other, "dev-admin")
        found = await keys.find(key.key_id)
        listed = sorted(k.key_id for k in await keys.list_for_clinic(clinic))
        by_other_clinic = await keys.revoke(key.key_id, other)
        not_revoked = (await keys.find(key.key_id))[0].revoked_at
        revoked = await keys.revoke(key.key_id, clinic)
        again = await keys.revoke(key.key_id, clinic)
        return (key, whole, forever, theirs, found, listed, by_other_clinic, not_revoked, revoked, again,
                (await keys.find(key.key_id))[0], await keys.find("0" * 16), await keys.revoke("0" * 16, clinic))

    (key, whole, forever, theirs, found, listed, by_other_clinic, not_revoked, revoked, again, stored,
     unknown, revoke_unknown) = with_api_keys(body)
    match = re.fullmatch(r"sdk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})", whole)
    assert match and match.group(1) == key.key_id
    assert found == (key, sha256(match.group(2)))  # the record as created, and only the secret's hash
    assert key.role is Role.EHR_INTEGRATION and key.expires_at > key.created_at and forever.expires_at is None
    assert listed == sorted([key.key_id, forever.key_id]) and theirs.key_id not in listed
    assert by_other_clinic is None and not_revoked is None  # another clinic's revoke: as for no such key
    assert revoked.revoked_at and again.revoked_at == revoked.revoked_at and stored.revoked_at == revoked.revoked_at
    assert unknown is None and revoke_unknown is None


@pytest.fixture(params=CONTRACT_CASES)
def with_links(request):
    return fake_or_real(request, InMemoryPatientLinks, lambda settings, aws: DynamoPatientLinks(
        aws.dynamodb, settings.patient_links_table))


def test_patient_links_are_used_once_refused_when_expired_and_erased_per_patient(with_links):
    clinic = _clinic()

    async def body(links):
        link, token = await links.issue(clinic, "patient-1", "job-000000000001", "dev-clinician", 600)
        second, _ = await links.issue(clinic, "patient-1", "job-000000000002", "dev-clinician", 600)
        expired, _ = await links.issue(clinic, "patient-1", "job-000000000003", "dev-clinician", -5)
        theirs, _ = await links.issue(clinic, "patient-2", "job-000000000004", "dev-clinician", 600)
        found = await links.find(sha256(token))
        uses = [await links.consume(link.link_id), await links.consume(link.link_id),
                await links.consume(expired.link_id), await links.consume(sha256("spl_unknown"))]
        used = await links.find(link.link_id)
        counted = await links.count_for_patient(patient_key(clinic, "patient-1"))
        erased = await links.delete_for_patient(patient_key(clinic, "patient-1"))
        return (link, token, found, uses, used, counted, erased,
                await links.count_for_patient(patient_key(clinic, "patient-1")),
                [await links.find(x.link_id) for x in (link, second, expired)], await links.find(theirs.link_id))

    link, token, found, uses, used, counted, erased, counted_after, gone, theirs = with_links(body)
    assert token.startswith("spl_") and link.link_id == sha256(token)  # stored only hashed
    assert found == link and found.used_at is None
    assert uses == [True, False, False, False]  # once; never when expired or unknown
    assert used.used_at is not None and used.expires_at == link.expires_at
    assert (counted, erased, counted_after) == (3, 3, 0)
    assert gone == [None, None, None] and theirs is not None and theirs.patient_id == "patient-2"


# --- the audit trail -------------------------------------------------------------------------------


@pytest.fixture(params=CONTRACT_CASES)
def with_audit(request):
    return fake_or_real(request, MemoryAuditStore, lambda settings, aws: S3AuditStore(aws.s3, settings.audit_bucket))


def _record(clinic: str, second: int, patient: str | None, action: str = "results.read") -> AuditRecord:
    return AuditRecord(record_id=uuid.uuid4().hex[:12], at=f"2026-11-20T10:00:{second:02d}.000000Z",
                       service="schizodot-results", action=action, outcome="success", actor="dev-clinician",
                       role="clinician", clinic_id=clinic, credential="bearer", patient_ref=patient,
                       detail={"count": second})


def test_the_audit_store_pages_a_clinics_records_in_time_order_by_patient_and_since_and_flags_rewrites(with_audit):
    clinic, other = _clinic(), _clinic()
    records = [_record(clinic, s, "pt-aaaaaaaaaaaaaaaa" if s % 2 else "pt-bbbbbbbbbbbbbbbb") for s in (5, 1, 4, 2, 3)]
    records.append(_record(clinic, 6, None, "audit.read"))

    async def body(store):
        for record in records:
            await store.append(record)
        await store.append(_record(other, 1, "pt-aaaaaaaaaaaaaaaa"))
        await store.append(records[0].model_copy(update={"action": "rewritten"}))  # the same key again
        first, after = await store.query(clinic, since=None, patient_ref_=None, limit=4, after=None)
        rest, end = await store.query(clinic, since=None, patient_ref_=None, limit=4, after=after)
        patient, patient_end = await store.query(clinic, since=None, patient_ref_="pt-aaaaaaaaaaaaaaaa", limit=10,
                                                 after=None)
        since, _ = await store.query(clinic, since="2026-11-20T10:00:04", patient_ref_=None, limit=10, after=None)
        return first, after, rest, end, patient, patient_end, since

    first, after, rest, end, patient, patient_end, since = with_audit(body)
    in_order = sorted(records, key=lambda r: r.at)
    as_stored = [{**r.model_dump(mode="json"), **({"overwritten": True} if r is records[0] else {})}
                 for r in in_order]  # a rewritten key: the first write, flagged
    assert first == as_stored[:4] and after is not None  # exactly as written, oldest first
    assert rest == as_stored[4:] and end is None
    assert [r["detail"]["count"] for r in patient] == [1, 3, 5] and patient_end is None
    assert [r["detail"]["count"] for r in since] == [4, 5, 6]


# --- erasures --------------------------------------------------------------------------------------


@pytest.fixture(params=CONTRACT_CASES)
def with_erasures(request):
    return fake_or_real(request, MemoryErasures, lambda settings, aws: DynamoErasures(aws.dynamodb,
                                                                                       settings.erasures_table))


def test_an_erasure_record_keeps_its_first_counts_and_its_first_finish(with_erasures):
    clinic, erasure_id = _clinic(), new_erasure_id()

    async def body(erasures):
        await erasures.create(erasure_id, clinic, "pt-aaaaaaaaaaaaaaaa", "dev-admin")
        requested = await erasures.get(erasure_id)
        counted = await erasures.set_counts(erasure_id, {"jobs": 2, "media": 1})
        recount = await erasures.set_counts(erasure_id, {"jobs": 0, "media": 0})  # a resumed run
        running = await erasures.get(erasure_id)
        await erasures.finish(erasure_id)
        done = await erasures.get(erasure_id)
        await erasures.finish(erasure_id, late={"artifacts": 1})  # the late sweep
        swept = await erasures.get(erasure_id)
        return requested, counted, recount, running, done, swept, await erasures.get(new_erasure_id())

    requested, counted, recount, running, done, swept, unknown = with_erasures(body)
    assert {k: requested[k] for k in ("erasure_id", "clinic_id", "patient_ref", "requested_by", "status")} == {
        "erasure_id": erasure_id, "clinic_id": clinic, "patient_ref": "pt-aaaaaaaaaaaaaaaa",
        "requested_by": "dev-admin", "status": "requested"}
    assert requested["requested_at"] and "counts" not in requested and "finished_at" not in requested
    assert counted == recount == {"jobs": 2, "media": 1}
    assert running["status"] == "running" and running["counts"] == {"jobs": 2, "media": 1}
    assert done["status"] == "done" and done["finished_at"] and "late" not in done
    assert swept["finished_at"] == done["finished_at"] and swept["late"] == {"artifacts": 1}
    assert swept["counts"] == {"jobs": 2, "media": 1}
    assert unknown is None


# --- rate limits -----------------------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0 + 5  # 5 s into a 60 s window (1.8e9 is a multiple of 60)

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=CONTRACT_CASES)
def with_limiter(request):
    clock = _Clock()
    run = fake_or_real(request, lambda: MemoryRateLimiter(clock), lambda settings, aws: DynamoRateLimiter(
        aws.dynamodb, settings.rate_limits_table, clock))
    return run, clock


def test_the_rate_limiter_counts_each_credential_per_window_and_says_when_to_retry(with_limiter):
    run, clock = with_limiter
    bucket, other = f"key:{uuid.uuid4().hex}", f"key:{uuid.uuid4().hex}"

    async def body(limiter):
        hits = [await limiter.hit(bucket, 2, 60) for _ in range(3)]
        elsewhere = await limiter.hit(other, 2, 60)
        clock.now += 60  # the next window
        return hits, elsewhere, await limiter.hit(bucket, 2, 60)

    hits, elsewhere, next_window = run(body)
    assert [(v.allowed, v.count, v.retry_after) for v in hits] == [(True, 1, 55), (True, 2, 55), (False, 3, 55)]
    assert (elsewhere.allowed, elsewhere.count) == (True, 1)
    assert (next_window.allowed, next_window.count, next_window.retry_after) == (True, 1, 55)
