"""In-memory adapters: the job store, object storage, the event publisher and the
patient history, for tests that run a stage in milliseconds (and for notebooks).

Each follows its real adapter's contract, and the contract tests run the same
cases against both (tests/integration/test_jobs_repository.py, test_adapters.py),
so a fake cannot drift from what DynamoDB, S3 and SQS do.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.aws.jobs import FailureReason, StageRun
from shared.aws.storage import MediaUnavailable, PresignedPost
from shared.domain.checkin import utc_now
from shared.domain.job import (
    COMPLETED,
    DONE,
    FAILED,
    PROCESSING,
    QUEUED,
    RUNNING,
    Announcement,
    ClaimOutcome,
    Job,
    PipelinePlan,
    StageOutputs,
    StageRecord,
    claim_outcome,
    credit_target,
    failure_message,
)
from shared.domain.patients import PatientKey
from shared.runtime.events import StageEvent
from shared.runtime.messaging import Accepted, Delivery
from shared.runtime.runner import Stage, StageRunner


class InMemoryJobs:
    """`JobStore` in memory: the rules of shared.domain.job applied to stored items."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}  # job_id -> the item as DynamoDB would hold it

    def _load(self, job_id: str) -> Job | None:
        item = self.items.get(job_id)
        return Job.from_item(json.loads(json.dumps(item))) if item is not None else None

    def _store(self, job: Job) -> Job:
        """Keep the job as DynamoDB would (its stored shape) and return it as read back."""
        item = job.to_item()
        self.items[job.job_id] = item
        return Job.from_item(json.loads(json.dumps(item)))

    async def create(self, job: Job) -> bool:
        if job.job_id in self.items:
            return False
        self._store(job)
        return True

    async def get(self, job_id: str) -> Job | None:
        return self._load(job_id)

    async def list_for_patient(self, patient_key: PatientKey, limit: int = 20, status: str | None = None) -> list[Job]:
        stored = PatientKey.parse(patient_key)
        jobs = [job for job_id in self.items if (job := self._load(job_id)) and job.patient_id == stored
                and (status is None or job.status == status)]
        return sorted(jobs, key=lambda job: job.created_at, reverse=True)[:limit]

    async def claim_stage(
        self, job_id: str, stage: str, message_id: str, message: str, *, known: Job | None = None
    ) -> StageRun:
        job = self._load(job_id)  # `known` only saves DynamoDB a read
        outcome = claim_outcome(job, stage, message_id)
        if job is None or outcome is not ClaimOutcome.CLAIMED:
            return StageRun(outcome, job_id, stage, message_id, job)
        now = utc_now()
        record = job.pipeline.stages.get(stage)
        if record is not None:
            record.attempts += 1
        else:
            record = StageRecord(state=RUNNING, message_id=message_id, started_at=now, credited=0, attempts=1)
        job.pipeline.stages = {**job.pipeline.stages, stage: record}
        job.status, job.updated_at, job.message = PROCESSING, now, message
        job.started_at = job.started_at or now
        run = StageRun(ClaimOutcome.CLAIMED, job_id, stage, message_id, self._store(job))
        run.credited = record.credited
        return run

    def _owned(self, run: StageRun) -> tuple[Job, StageRecord] | None:
        job = self._load(run.job_id)
        record = job.pipeline.stages.get(run.stage) if job else None
        if job is None or record is None or job.status != PROCESSING or record.message_id != run.message_id:
            return None
        return job, record

    async def report_progress(self, run: StageRun, fraction: float, message: str) -> bool:
        owned = self._owned(run)
        target = credit_target(run.weight, fraction)
        delta = target - run.credited
        if owned is None or (delta > 0 and owned[1].credited != run.credited):
            return False
        job, record = owned
        if delta > 0:
            record.credited = target
            job.progress += delta
            run.credited = target
        job.updated_at, job.message = utc_now(), message
        self._store(job)
        return True

    async def finish_stage(
        self, run: StageRun, message: str, outputs: dict[str, Any], plan: PipelinePlan | None = None,
        announced: Sequence[Announcement] = (),
    ) -> bool:
        owned = self._owned(run)
        if owned is None or owned[1].state != RUNNING:
            return False
        job, record = owned
        now = utc_now()
        job.progress += run.weight - record.credited
        record.state, record.finished_at, record.credited = DONE, now, run.weight
        record.outputs = StageOutputs.model_validate(outputs)
        record.announced = list(announced)
        for key, value in (plan.model_dump(exclude_unset=True) if plan else {}).items():
            setattr(job.pipeline, key, value)
        job.updated_at, job.message = now, message
        self._store(job)
        run.credited = run.weight
        return True

    async def complete(self, run: StageRun, summary: dict[str, Any], message: str) -> bool:
        owned = self._owned(run)
        if owned is None:
            return False
        job, record = owned
        now = utc_now()
        record.state, record.finished_at = DONE, now
        job.status, job.progress, job.completed_at, job.updated_at = COMPLETED, 100, now, now
        job.results, job.message = summary, message
        self._store(job)
        return True

    async def fail(self, job_id: str, error: str, stage: str | None = None, *, reason: FailureReason = "other") -> bool:
        job = self._load(job_id)
        if job is None or not job.active:
            return False
        now = utc_now()
        job.status, job.error, job.message = FAILED, error, failure_message(error, stage)
        job.completed_at, job.updated_at = now, now
        self._store(job)
        return True

    async def record_timeline(self, job_id: str, timeline: list[dict[str, Any]]) -> bool:
        job = self._load(job_id)
        if job is None or job.status != QUEUED:
            return False
        job.pipeline.timeline, job.updated_at = list(timeline), utc_now()
        self._store(job)
        return True

    async def find_stuck(self, older_than_iso: str) -> list[Job]:
        return [job for job_id in self.items if (job := self._load(job_id)) and job.active
                and job.updated_at < older_than_iso]

    async def delete(self, job_id: str) -> bool:
        return self.items.pop(job_id, None) is not None

    async def update_summary(self, job_id: str, fields: dict[str, Any]) -> bool:
        item = self.items.get(job_id)
        if item is None or item.get("status") != "completed":
            return False
        item["results"] = {**(item.get("results") or {}), **json.loads(json.dumps(fields))}
        return True


class MemoryStorage:
    """`ObjectStore` in memory: objects by (bucket, key)."""

    def __init__(self, bucket: str = "schizodot-media") -> None:
        self.bucket = bucket
        self.objects: dict[tuple[str, str], tuple[bytes, str]] = {}  # -> (body, content type)

    async def download(self, key: str, dest: Path, bucket: str | None = None) -> int:
        where = (bucket or self.bucket, key)
        if where not in self.objects:
            raise MediaUnavailable(f"the media file does not exist: s3://{where[0]}/{key}")
        dest.write_bytes(self.objects[where][0])
        return len(self.objects[where][0])

    async def exists(self, key: str, bucket: str | None = None) -> bool:
        return (bucket or self.bucket, key) in self.objects

    async def put_json(self, key: str, document: dict[str, Any]) -> None:
        await self.put_bytes(key, json.dumps(document, separators=(",", ":")).encode(), "application/json")

    async def put_bytes(self, key: str, body: bytes, content_type: str) -> None:
        self.objects[(self.bucket, key)] = (bytes(body), content_type)

    async def get_json(self, key: str) -> dict[str, Any]:
        if (self.bucket, key) not in self.objects:
            raise KeyError(f"NoSuchKey: s3://{self.bucket}/{key}")
        return json.loads(self.objects[(self.bucket, key)][0])

    async def presigned_upload(self, key: str, content_type: str, expires_in: int) -> str:
        return f"memory://{self.bucket}/{key}?content-type={content_type}&expires={expires_in}"

    async def presigned_post(self, key: str, content_type: str, max_bytes: int, expires_in: int) -> PresignedPost:
        return PresignedPost(f"memory://{self.bucket}", {"key": key, "Content-Type": content_type,
                                                         "max_bytes": str(max_bytes), "expires": str(expires_in)})

    async def list_keys(self, prefix: str, bucket: str | None = None) -> list[str]:
        return sorted(k for b, k in self.objects if b == (bucket or self.bucket) and k.startswith(prefix))

    async def delete_keys(self, keys: list[str], bucket: str | None = None) -> int:
        for key in keys:
            self.objects.pop((bucket or self.bucket, key), None)
        return len(keys)

    async def abort_uploads(self, prefix: str) -> int:
        return 0  # no multipart uploads in memory

    async def unfinished_uploads(self, prefix: str) -> int:
        return 0

    def put_file(self, key: str, path: Path, bucket: str | None = None) -> None:
        """Place media as an uploader would (tests)."""
        self.objects[(bucket or self.bucket, key)] = (Path(path).read_bytes(), "application/octet-stream")


class RecordingPublisher:
    """`EventPublisher` in memory: what was sent, to which stage, in order."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, StageEvent]] = []

    async def publish(self, stage: str, event: StageEvent) -> str:
        self.sent.append((stage, event))
        return f"memory-{len(self.sent)}"

    def to(self, stage: str) -> list[StageEvent]:
        return [event for to, event in self.sent if to == stage]


def _projected(item: dict[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """`item` with only the dotted `paths` it holds, as DynamoDB's ProjectionExpression returns it."""
    out: dict[str, Any] = {}
    for path in paths:
        names = path.split(".")
        value: Any = item
        for name in names:
            value = value.get(name, _ABSENT) if isinstance(value, dict) else _ABSENT
        if value is _ABSENT:
            continue
        target = out
        for name in names[:-1]:
            target = target.setdefault(name, {})
        target[names[-1]] = value
    return out


_ABSENT = object()


class InMemoryHistory:
    """SchizodotUsers in memory: `HistoryReader` and the results writer's `save`."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], dict[str, Any]] = {}  # (user_id, timestamp) -> item

    async def delete_patient(self, patient_key: PatientKey) -> int:
        doomed = [key for key in self.items if key[0] == patient_key]
        for key in doomed:
            del self.items[key]
        return len(doomed)

    async def save(self, item: dict[str, Any]) -> bool:
        key = (item["user_id"], item["timestamp"])
        if key in self.items:
            return self.items[key] == item
        self.items[key] = json.loads(json.dumps(item))
        return True

    async def get(self, user_id: str, timestamp: str) -> dict[str, Any] | None:
        item = self.items.get((user_id, timestamp))
        return json.loads(json.dumps(item)) if item is not None else None

    async def replace_compliance(self, user_id: str, timestamp: str, compliance: dict[str, Any],
                                 expected_revision: int) -> bool:
        item = self.items.get((user_id, timestamp))
        if item is None:
            return False
        review = (item["results"].get("compliance") or {}).get("review")
        if (review or {}).get("revision", 0) != expected_revision or (review is not None and not expected_revision):
            return False
        item["results"]["compliance"] = json.loads(json.dumps(compliance))
        return True

    def _newest_first(self, patient_key: PatientKey) -> list[dict[str, Any]]:
        stored = str(PatientKey.parse(patient_key))  # as the real reader: a clinic-local id is a TypeError
        found = [item for (user, _), item in self.items.items() if user == stored]
        return json.loads(json.dumps(sorted(found, key=lambda item: item["timestamp"], reverse=True)))

    async def latest(self, patient_key: PatientKey, limit: int = 10) -> list[dict[str, Any]]:
        return self._newest_first(patient_key)[:limit]

    async def latest_projected(self, patient_key: PatientKey, attributes: Sequence[str],
                               limit: int = 10) -> list[dict[str, Any]]:
        return [_projected(item, attributes) for item in self._newest_first(patient_key)[:limit]]

    async def for_job(self, patient_key: PatientKey, job_id: str) -> dict[str, Any] | None:
        return next((item for item in self._newest_first(patient_key) if item["job_id"] == job_id), None)

    async def page(
        self, patient_key: PatientKey, limit: int, after: dict[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        items = [item for item in self._newest_first(patient_key)
                 if after is None or item["timestamp"] < after["timestamp"]]
        if len(items) <= limit:
            return items, None
        return items[:limit], {"user_id": str(patient_key), "timestamp": items[limit - 1]["timestamp"]}


@dataclass
class FakeAdapters:
    """The in-memory adapters a stage runs on in a test, wired as `shared.runtime.worker` wires the real ones."""

    jobs: InMemoryJobs = field(default_factory=InMemoryJobs)
    storage: MemoryStorage = field(default_factory=MemoryStorage)
    publisher: RecordingPublisher = field(default_factory=RecordingPublisher)
    history: InMemoryHistory = field(default_factory=InMemoryHistory)

    def runner(self, stage: Stage[Any, Any], deps: Any) -> StageRunner[Any, Any]:
        return StageRunner(stage, deps, self.jobs, self.storage, self.publisher)


async def deliver(runner: StageRunner[Any, Any], body: str, *, message_id: str = "m-1", receive_count: int = 1,
                  final_attempt: bool = False) -> Accepted:
    """One SQS delivery through the runner, as the consumer hands it over; errors propagate
    (the consumer's part, settling them, is tested with the consumer)."""
    delivery = Delivery(message_id, f"receipt-{message_id}", body, {}, receive_count,
                        f"schizodot-{runner.stage.name}", final_attempt)
    accepted = await runner.accept(delivery)
    await accepted.work()
    return accepted


# --- identity and the audit trail (issue 12) --------------------------------------------------


class InMemoryApiKeys:
    """`shared.identity.credentials.ApiKeyStore` in memory."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}

    async def create(self, name: str, role: Any, clinic_id: str, created_by: str,
                     expires_in: int | None = None) -> tuple[Any, str]:
        from shared.identity.credentials import new_api_key, sha256

        key, secret, whole = new_api_key(name, role, clinic_id, created_by, expires_in)
        self.items[key.key_id] = {"key": key, "secret_sha256": sha256(secret)}
        return key, whole

    async def find(self, key_id: str) -> tuple[Any, str] | None:
        found = self.items.get(key_id)
        return (found["key"], found["secret_sha256"]) if found else None

    async def list_for_clinic(self, clinic_id: str) -> list[Any]:
        return [found["key"] for found in self.items.values() if found["key"].clinic_id == clinic_id]

    async def revoke(self, key_id: str, clinic_id: str) -> Any | None:
        from dataclasses import replace

        from shared.identity.credentials import iso

        found = self.items.get(key_id)
        if found is None or found["key"].clinic_id != clinic_id:
            return None
        if not found["key"].revoked_at:
            found["key"] = replace(found["key"], revoked_at=iso(time.time()))
        return found["key"]


class InMemoryPatientLinks:
    """`shared.identity.credentials.PatientLinkStore` in memory."""

    def __init__(self) -> None:
        self.links: dict[str, Any] = {}

    async def issue(self, clinic_id: str, patient_id: str, job_id: str, created_by: str,
                    expires_in: int) -> tuple[Any, str]:
        from shared.identity.credentials import PatientLink, new_link_token, now_epoch

        link_id, token = new_link_token()
        self.links[link_id] = PatientLink(link_id, clinic_id, patient_id, job_id, created_by, now_epoch() + expires_in)
        return self.links[link_id], token

    async def find(self, link_id: str) -> Any | None:
        return self.links.get(link_id)

    async def consume(self, link_id: str) -> bool:
        from dataclasses import replace

        from shared.identity.credentials import iso, now_epoch

        link = self.links.get(link_id)
        if link is None or link.used_at or link.expires_at <= now_epoch():
            return False
        self.links[link_id] = replace(link, used_at=iso(time.time()))
        return True

    async def count_for_patient(self, patient_key: PatientKey) -> int:
        return sum(PatientKey.of(link.clinic_id, link.patient_id) == patient_key for link in self.links.values())

    async def delete_for_patient(self, patient_key: PatientKey) -> int:
        doomed = [i for i, link in self.links.items() if PatientKey.of(link.clinic_id, link.patient_id) == patient_key]
        for link_id in doomed:
            del self.links[link_id]
        return len(doomed)


class MemoryAuditStore:
    """`shared.identity.audit.AuditStore` in memory: records by key, as the S3 store orders them."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.failing = False  # a broken store, to test that a failed write fails the request

    async def append(self, record: Any) -> None:
        if self.failing:
            raise ConnectionError("audit store unavailable")
        key = record.key()
        if key in self.records:  # the first write stands, flagged, as S3AuditStore reads a key's versions
            self.records[key] = {**self.records[key], "overwritten": True}
        else:
            self.records[key] = record.model_dump(mode="json")

    async def query(self, clinic_id: str, *, since: str | None, patient_ref_: str | None, limit: int,
                    after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        prefix = f"audit/{clinic_id}/"
        marker = after or (prefix + since if since else "")
        keys = [k for k in sorted(self.records) if k.startswith(prefix) and k > marker
                and (not patient_ref_ or f"_{patient_ref_}_" in k.removeprefix(prefix))]
        page = keys[:limit]
        return [self.records[k] for k in page], (page[-1] if len(keys) > limit else None)
