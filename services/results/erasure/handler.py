"""Erasure of a patient: media, artifacts, evidence frames, jobs, results, links, alerts
and the clinic's patient list.

`DELETE /api/v1/patients/{patient_id}` records an erasure (`SchizodotErasures`:
who asked, the clinic, the patient's *pseudonym*, never the id) and puts an
`erasure.requested` event on the erasure queue (shared.runtime.topology.WORK_QUEUES). The
results worker consumes it with the same consumer as every stage (long poll,
heartbeat, retries with back-off, dead letters), so an erasure survives a crash:
the message comes back and the work resumes. Every step is idempotent:

1. inventory: every job of the patient key (the GSI), its media object and its
   `artifacts/<job>/` prefix (evidence frames included), anything else under
   `uploads/<patient key>/`, unfinished multipart uploads there, the patient's
   SchizodotUsers items, patient links, alerts (SchizodotAlerts) and their row on
   the clinic's patient list (SchizodotClinicPatients). The counts of the first complete
   inventory are recorded once (a conditional write) and are the receipt: a run
   resumed after a crash deletes what is left without counting it twice;
2. jobs still running are failed ("the patient's data was erased"), which stops
   every later stage (their claims and writes are conditional on an active job);
3. everything in the inventory is deleted; a second inventory must come back empty
   (if a stopped stage wrote meanwhile, it is deleted too);
4. queued messages that name the patient are deleted (`queued_messages`): S3's
   upload notifications (their keys hold the patient key) and EHR check-in events on
   the ingest queue, and anything of the patient's jobs in the dead-letter queues
   (kept 14 days). Stage messages carry job ids only (shared.runtime.events), so the other
   queues hold no patient key. Every other message is released at once;
5. the erasure is marked done and audited (`erasure.completed` with the counts);
6. a late sweep, `RESULTS_ERASURE_SWEEP_DELAY_SECONDS` later, repeats 1-4 for
   what a stage that was mid-work when its job was failed may still have written
   (an artifact, a dead letter); what it finds is added to the receipt as `late`.

Erasing a patient that has nothing is a receipt with zero counts. The audit
trail (Object Lock) keeps the pseudonymous records, the erasure's included.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import structlog
from pydantic import BaseModel, ConfigDict

from services.results.erasure.queued import QueuedMessages, names_patient
from services.results.erasure.store import ErasureStore
from shared.aws.history import HistoryReader
from shared.aws.jobs import JobStore
from shared.aws.storage import ObjectStore
from shared.domain.checkin import artifacts_prefix
from shared.domain.errors import MalformedMessage
from shared.domain.patients import PatientKey
from shared.identity.audit import AuditTrail
from shared.identity.credentials import PatientLinkStore
from shared.runtime.events import decode_event, encode_event, event_data
from shared.runtime.infra import UPLOAD_PREFIX
from shared.runtime.messaging import Accepted, Delivery

log = structlog.get_logger()

ERASURE_REQUESTED = "org.schizodot.erasure.requested.v1"
ERASURE_QUEUE = "erasure"
CATEGORIES = ("media", "artifacts", "evidence_frames", "unfinished_uploads", "jobs", "results", "patient_links",
              "alerts", "clinic_patients", "queued_messages")


class ErasureRequested(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str] = ERASURE_REQUESTED

    erasure_id: str
    clinic_id: str
    patient_id: str  # clinic-local; travels only on the encrypted queue
    sweep: bool = False  # the late sweep
    # The late sweep's: the erased jobs, whose artifacts a stage stopped mid-work may still write
    # (their job items are gone by then, so the patient's job index no longer finds them).
    job_ids: tuple[str, ...] = ()


async def remove_queued(request: "ErasureRequested", job_ids: Iterable[str], deps: "ErasureDeps") -> int:
    if deps.queues is None:
        return 0
    jobs = tuple(job_ids)
    return await deps.queues.remove(lambda body: names_patient(body, request.clinic_id, request.patient_id, jobs))


class ResultsEraser(Protocol):
    async def delete_patient(self, patient_key: PatientKey) -> int: ...


@dataclass
class Inventory:
    """What is stored of one patient, by category."""

    job_ids: list[str] = field(default_factory=list)
    active_job_ids: list[str] = field(default_factory=list)
    media: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)
    evidence_frames: list[str] = field(default_factory=list)
    results: int = 0
    links: int = 0
    unfinished_uploads: int = 0
    alerts: int = 0
    clinic_patients: int = 0  # the patient's row on the clinic's patient list (0 or 1)

    def counts(self) -> dict[str, int]:
        return {"media": len(self.media), "artifacts": len(self.artifacts),
                "evidence_frames": len(self.evidence_frames), "unfinished_uploads": self.unfinished_uploads,
                "jobs": len(self.job_ids), "results": self.results, "patient_links": self.links,
                "alerts": self.alerts, "clinic_patients": self.clinic_patients}

    @property
    def empty(self) -> bool:
        return not any(self.counts().values())


@dataclass
class ErasureDeps:
    jobs: JobStore
    storage: ObjectStore
    results: ResultsEraser
    history: HistoryReader
    links: PatientLinkStore
    erasures: ErasureStore
    audit: AuditTrail
    schedule_sweep: Any  # async (ErasureRequested) -> None: the late sweep, delayed
    alerts: Any = None  # services.results.alerts.store.AlertStore
    roster: Any = None  # services.results.alerts.roster.Roster
    queues: QueuedMessages | None = None  # the queues that can hold the patient's data
    max_jobs: int = 100_000


async def take_inventory(key: PatientKey, deps: ErasureDeps, erased_jobs: tuple[str, ...] = ()) -> Inventory:
    found = Inventory()
    jobs = await deps.jobs.list_for_patient(key, limit=deps.max_jobs)
    for job_id in sorted(set(erased_jobs) - {job.job_id for job in jobs}):
        for artifact in await deps.storage.list_keys(artifacts_prefix(job_id)):
            (found.evidence_frames if "/evidence/" in artifact else found.artifacts).append(artifact)
    media: set[str] = set()
    for job in jobs:
        found.job_ids.append(job.job_id)
        if job.active:
            found.active_job_ids.append(job.job_id)
        bucket = job.pipeline.bucket
        if job.s3_key and bucket in (None, deps.storage.bucket):  # listed, not read: no GetObject on media
            media.update(k for k in await deps.storage.list_keys(job.s3_key) if k == job.s3_key)
        for artifact in await deps.storage.list_keys(artifacts_prefix(job.job_id)):
            (found.evidence_frames if "/evidence/" in artifact else found.artifacts).append(artifact)
    media.update(await deps.storage.list_keys(f"{UPLOAD_PREFIX}{key}/"))
    found.media = sorted(media)
    found.unfinished_uploads = await deps.storage.unfinished_uploads(f"{UPLOAD_PREFIX}{key}/")
    found.results = len(await deps.history.latest(key, deps.max_jobs))
    found.links = await deps.links.count_for_patient(key)
    clinic, local = key.clinic_id, key.patient
    if clinic is not None:
        if deps.alerts is not None:
            found.alerts = len(await deps.alerts.for_patient(clinic, local, limit=deps.max_jobs))
        if deps.roster is not None:
            found.clinic_patients = int(await deps.roster.get(clinic, local) is not None)
    return found


async def delete_inventory(key: PatientKey, found: Inventory, deps: ErasureDeps) -> None:
    for job_id in found.active_job_ids:  # stops every later stage: their writes need an active job
        await deps.jobs.fail(job_id, "the patient's data was erased", "erasure", reason="other")
    await deps.storage.delete_keys(found.media + found.artifacts + found.evidence_frames)
    await deps.storage.abort_uploads(f"{UPLOAD_PREFIX}{key}/")
    await deps.results.delete_patient(key)
    await deps.links.delete_for_patient(key)
    clinic, local = key.clinic_id, key.patient
    if clinic is not None:
        if deps.alerts is not None:
            await deps.alerts.delete_for_patient(clinic, local)
        if deps.roster is not None:
            await deps.roster.delete(clinic, local)
    for job_id in found.job_ids:
        await deps.jobs.delete(job_id)


async def erase(request: ErasureRequested, deps: ErasureDeps) -> None:
    """One delivery of an erasure: idempotent, resumable."""
    record = await deps.erasures.get(request.erasure_id)
    if record is None:
        raise MalformedMessage(f"no erasure {request.erasure_id} was requested")
    if record["status"] == "done" and not request.sweep:
        return  # a duplicate delivery
    key = PatientKey.of(request.clinic_id, request.patient_id)
    found = await take_inventory(key, deps, request.job_ids)
    if request.sweep:
        late = found.counts()
        await delete_inventory(key, found, deps)
        late["queued_messages"] = await remove_queued(request, {*request.job_ids, *found.job_ids}, deps)
        await deps.erasures.finish(request.erasure_id, late=late)
        if any(late.values()):
            await deps.audit.record_system("erasure.late_sweep", clinic_id=request.clinic_id, stored_patient_key=key,
                                           detail={"erasure_id": request.erasure_id, "counts": late})
        log.info("erasure late sweep done", erasure_id=request.erasure_id, found=sum(late.values()))
        return
    # Queued messages first: an EHR event still queued would make the patient a new job after the erasure.
    queued = await remove_queued(request, found.job_ids, deps)
    counts = await deps.erasures.set_counts(request.erasure_id, {**found.counts(), "queued_messages": queued})
    await delete_inventory(key, found, deps)
    erased_jobs = set(found.job_ids)
    for _ in range(3):  # a stage stopped mid-work may have written meanwhile
        again = await take_inventory(key, deps, tuple(erased_jobs))
        if again.empty:
            break
        erased_jobs.update(again.job_ids)
        await delete_inventory(key, again, deps)
    else:
        raise RuntimeError("the patient's data kept reappearing; the erasure will be retried")
    await deps.audit.record_system("erasure.completed", clinic_id=request.clinic_id, stored_patient_key=key,
                                   detail={"erasure_id": request.erasure_id, "counts": counts})
    await deps.erasures.finish(request.erasure_id)
    await deps.schedule_sweep(request.model_copy(update={"sweep": True, "job_ids": tuple(sorted(erased_jobs))}))
    log.info("patient erased", erasure_id=request.erasure_id, removed=sum(counts.values()))


class ErasureHandler:
    """`shared.runtime.messaging.MessageHandler` for the erasure queue."""

    stage = ERASURE_QUEUE

    def __init__(self, deps: ErasureDeps) -> None:
        self.deps = deps

    async def accept(self, delivery: Delivery) -> Accepted:
        # A message that is not an erasure raises MalformedMessage here: the consumer dead-letters it.
        request = event_data(decode_event(delivery.body), ErasureRequested, ERASURE_REQUESTED)
        return Accepted(work=lambda: erase(request, self.deps))


def encode_erasure(request: ErasureRequested) -> str:
    return encode_event(ERASURE_REQUESTED, "urn:schizodot:results", request.erasure_id, request)
