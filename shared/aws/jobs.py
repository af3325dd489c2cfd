"""SchizodotJobs: the jobs repository, the one reader and writer of job items.

`JobStore` is what the stages use; `JobsRepository` is it on DynamoDB and
`shared.fakes.InMemoryJobs` in memory, and the contract tests run the same
cases against both (tests/integration/test_jobs_repository.py). The rules they
follow are in `shared.domain.job`; here they become conditional DynamoDB writes, so
they hold under redelivery and between parallel stages.

A write whose response was lost is retried by botocore, and the retry then
meets its own first attempt: the condition fails although the write succeeded.
Every conditional write here asks DynamoDB for the item as it is when the
condition fails (ReturnValuesOnConditionCheckFailure=ALL_OLD) and checks
whether it already shows this very write (the same claim, credit, finish or
terminal state, by the timestamps it wrote) before treating it as a conflict.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from shared.aws.dynamo import (
    conditional_failure_item,
    from_item,
    is_conditional_failure,
    items,
    put_if_absent,
    to_attribute,
)
from shared.domain.checkin import RESERVED_METADATA_KEY, utc_now
from shared.domain.job import (
    COMPLETED,
    DONE,
    FAILED,
    PATIENT_JOBS_INDEX,
    PROCESSING,
    QUEUED,
    RUNNING,
    Announcement,
    ClaimOutcome,
    Job,
    PipelinePlan,
    StageRecord,
    claim_outcome,
    credit_target,
    failure_message,
)

# Why a job failed, as the metrics count it.
FailureReason = Literal["input", "retries_exhausted", "stuck", "other"]


@dataclass
class StageRun:
    """One stage's hold on one job, as `claim_stage` returns it."""

    outcome: ClaimOutcome
    job_id: str
    stage: str
    message_id: str
    job: Job | None = None  # as claimed (None only when there is no such job)
    credited: int = 0

    @property
    def weight(self) -> int:
        return self.job.pipeline.weight(self.stage) if self.job else 0

    @property
    def record(self) -> StageRecord | None:
        return self.job.pipeline.stages.get(self.stage) if self.job else None


class JobStore(Protocol):
    async def create(self, job: Job) -> bool:
        """Store a new job; False when one with that job_id already exists."""

    async def get(self, job_id: str) -> Job | None: ...

    async def list_for_patient(self, patient_id: str, limit: int = 20, status: str | None = None) -> list[Job]:
        """Access pattern 4: a patient's jobs, newest first."""

    async def claim_stage(
        self, job_id: str, stage: str, message_id: str, message: str, *, known: Job | None = None
    ) -> StageRun:
        """Hold `stage` of the job for this message (`known`: the job as just read, saving a read)."""

    async def report_progress(self, run: StageRun, fraction: float, message: str) -> bool:
        """Credit `fraction` (0..1) of the stage's share; never more than once per point."""

    async def finish_stage(
        self, run: StageRun, message: str, outputs: dict[str, Any], plan: PipelinePlan | None = None,
        announced: Sequence[Announcement] = (),
    ) -> bool:
        """Mark the stage done, credit the rest of its share, record its outputs and announcements."""

    async def complete(self, run: StageRun, summary: dict[str, Any], message: str) -> bool:
        """The one write that sets progress to 100: the job is done."""

    async def fail(self, job_id: str, error: str, stage: str | None = None, *, reason: FailureReason = "other") -> bool:
        """End an active job as failed with an error a person can act on."""

    async def record_timeline(self, job_id: str, timeline: list[dict[str, Any]]) -> bool:
        """Keep a check-in's timeline (shared.domain.timeline, stored form) on a job still waiting for its
        recording; False when the job is gone or has started (its stages read the timeline then)."""

    async def find_stuck(self, older_than_iso: str) -> list[Job]:
        """Active jobs not updated since `older_than_iso` (for the sweeper)."""

    async def delete(self, job_id: str) -> bool:
        """Erasure only: remove the item (True when there was one)."""

    async def update_summary(self, job_id: str, fields: dict[str, Any]) -> bool:
        """Set fields of a completed job's `results` summary (a dosing review's verdict); False if
        the job is not completed."""


@dataclass(frozen=True)
class _Written:
    ok: bool
    job: Job | None  # after the write (when asked for), or as it stands after a refused one


_NAMES = {
    "#status": "status",
    "#md": "metadata",
    "#pl": RESERVED_METADATA_KEY,
    "#stages": "stages",
    "#state": "state",
}
_STAGE = "#md.#pl.#stages.#stage"
# The stage is held by this message and the job still runs.
_OWNED = f"#status = :processing AND {_STAGE}.message_id = :mid"


def _stage_shows(stage: str, message_id: str, **expected: Any) -> Callable[[Job], bool]:
    """Whether a job's record of `stage` is held by `message_id` and has `expected` values."""

    def check(job: Job) -> bool:
        record = job.pipeline.stages.get(stage)
        return record is not None and record.message_id == message_id and all(
            getattr(record, name) == value for name, value in expected.items())

    return check


class JobsRepository:
    """`JobStore` on DynamoDB."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    async def create(self, job: Job) -> bool:
        return await put_if_absent(self._db, self._table, job.to_item(), "job_id")

    async def get(self, job_id: str) -> Job | None:
        response = await self._db.get_item(
            TableName=self._table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
        )
        return Job.from_item(from_item(response["Item"])) if "Item" in response else None

    async def list_for_patient(self, patient_id: str, limit: int = 20, status: str | None = None) -> list[Job]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": PATIENT_JOBS_INDEX,
            "KeyConditionExpression": "patient_id = :p",
            "ExpressionAttributeValues": {":p": {"S": patient_id}},
            "ScanIndexForward": False,
        }
        if status:
            request["FilterExpression"] = "#status = :s"
            request["ExpressionAttributeNames"] = {"#status": "status"}
            request["ExpressionAttributeValues"][":s"] = {"S": status}
        # With a status filter a page may hold few matches, so read in larger pages.
        pages = {"PageSize": 100 if status else limit, "MaxItems": limit}
        return [Job.from_item(item) async for item in items(self._db, "query", **request, PaginationConfig=pages)]

    async def claim_stage(
        self, job_id: str, stage: str, message_id: str, message: str, *, known: Job | None = None
    ) -> StageRun:
        """Without `known`, the first claim of a stage (what nearly every delivery is) is written without
        reading the job first: its condition holds only for an active job whose stage nobody holds, and a
        refused write returns the item as it stands (ALL_OLD), from which the outcome is decided as usual."""
        job = known
        guess_first_claim = known is None
        for _ in range(4):  # decide again on the item as it stands if another writer moved it in between
            record = None
            if not guess_first_claim:
                if job is None:
                    job = await self.get(job_id)
                outcome = claim_outcome(job, stage, message_id)
                if outcome is not ClaimOutcome.CLAIMED or job is None:
                    return StageRun(outcome, job_id, stage, message_id, job)
                record = job.pipeline.stages.get(stage)
            guess_first_claim = False
            now = utc_now()
            if record is not None:  # the same message again: its earlier delivery died mid-stage
                update = f"SET {_STAGE}.attempts = :attempts"
                condition = f"{_STAGE}.message_id = :mid AND {_STAGE}.#state = :running AND {_STAGE}.attempts = :seen"
                landed = _stage_shows(stage, message_id, state=RUNNING, attempts=record.attempts + 1)
            else:
                update = f"SET {_STAGE} = :claim"
                condition = f"attribute_not_exists({_STAGE})"
                landed = _stage_shows(stage, message_id, started_at=now)
            claim = {"state": RUNNING, "message_id": message_id, "started_at": now, "credited": 0, "attempts": 1}
            written = await self._update(
                job_id,
                update + ", #status = :processing, started_at = if_not_exists(started_at, :now),"
                " updated_at = :now, message = :message",
                f"#status IN (:queued, :processing) AND {condition}",
                {"#stage": stage},
                {":now": now, ":message": message, ":mid": message_id, ":claim": claim,
                 ":seen": record.attempts if record else 0, ":attempts": (record.attempts + 1) if record else 1},
                landed=landed,
                return_new=True,
            )
            if written.ok and written.job is not None:
                run = StageRun(ClaimOutcome.CLAIMED, job_id, stage, message_id, written.job)
                run.credited = run.record.credited if run.record else 0
                return run
            job = written.job
        raise RuntimeError(f"could not claim stage {stage} of {job_id}: the job kept changing")

    async def report_progress(self, run: StageRun, fraction: float, message: str) -> bool:
        target = credit_target(run.weight, fraction)
        delta = target - run.credited
        update = "SET updated_at = :now, message = :message"
        condition = _OWNED
        landed = _stage_shows(run.stage, run.message_id)
        if delta > 0:
            update += f", {_STAGE}.credited = :credited ADD progress :delta"
            condition += f" AND {_STAGE}.credited = :old"
            landed = _stage_shows(run.stage, run.message_id, credited=target)
        written = await self._update(
            run.job_id, update, condition, {"#stage": run.stage},
            {":now": utc_now(), ":message": message, ":mid": run.message_id,
             ":credited": target, ":delta": delta, ":old": run.credited},
            landed=lambda job: job.status == PROCESSING and landed(job),
        )
        if written.ok and delta > 0:
            run.credited = target
        return written.ok

    async def finish_stage(
        self, run: StageRun, message: str, outputs: dict[str, Any], plan: PipelinePlan | None = None,
        announced: Sequence[Announcement] = (),
    ) -> bool:
        """The rest of the share is computed from what the item says was credited,
        under a condition on that number: a second delivery of the same message
        working beside this one (visibility lapsed) may have credited more meanwhile."""
        names = {"#stage": run.stage}
        values: dict[str, Any] = {":message": message, ":mid": run.message_id, ":outputs": outputs,
                                  ":weight": run.weight,
                                  ":announced": [a.model_dump(mode="json") for a in announced]}
        update = (
            f"SET updated_at = :now, message = :message, {_STAGE}.#state = :done, {_STAGE}.finished_at = :now,"
            f" {_STAGE}.outputs = :outputs, {_STAGE}.credited = :weight, {_STAGE}.announced = :announced"
        )
        for index, (key, value) in enumerate((plan.model_dump(mode="json", exclude_unset=True) if plan else {}).items()):
            names[f"#u{index}"] = key
            values[f":u{index}"] = value
            update += f", #md.#pl.#u{index} = :u{index}"
        condition = _OWNED + f" AND {_STAGE}.#state = :running AND {_STAGE}.credited = :old"
        for _ in range(5):
            remaining = run.weight - run.credited
            now = utc_now()
            written = await self._update(
                run.job_id, update + (" ADD progress :delta" if remaining > 0 else ""), condition, names,
                {**values, ":now": now, ":old": run.credited, ":delta": remaining},
                landed=_stage_shows(run.stage, run.message_id, state=DONE, finished_at=now),
            )
            if written.ok:
                run.credited = run.weight
                return True
            job = written.job or await self.get(run.job_id)
            record = job.pipeline.stages.get(run.stage) if job else None
            if job is None or job.status != PROCESSING or record is None or record.message_id != run.message_id \
                    or record.state != RUNNING:
                return False  # finished by another delivery, or the job ended
            run.credited = record.credited
        return False

    async def complete(self, run: StageRun, summary: dict[str, Any], message: str) -> bool:
        now = utc_now()
        update = (
            "SET #status = :completed, progress = :hundred, completed_at = :now, updated_at = :now,"
            f" results = :results, message = :message, {_STAGE}.#state = :done, {_STAGE}.finished_at = :now"
        )
        shows_it = _stage_shows(run.stage, run.message_id, state=DONE, finished_at=now)
        written = await self._update(
            run.job_id, update, _OWNED, {"#stage": run.stage},
            {":now": now, ":completed": COMPLETED, ":hundred": 100, ":results": summary,
             ":message": message, ":mid": run.message_id},
            landed=lambda job: job.status == COMPLETED and shows_it(job),
        )
        return written.ok

    async def fail(self, job_id: str, error: str, stage: str | None = None, *, reason: FailureReason = "other") -> bool:
        now = utc_now()
        written = await self._update(
            job_id,
            "SET #status = :failed, #error = :error, message = :message, completed_at = :now, updated_at = :now",
            "#status IN (:queued, :processing)",
            {"#error": "error"},
            {":failed": FAILED, ":error": error, ":now": now, ":message": failure_message(error, stage)},
            landed=lambda job: job.status == FAILED and job.completed_at == now and job.error == error,
        )
        return written.ok

    async def record_timeline(self, job_id: str, timeline: list[dict[str, Any]]) -> bool:
        written = await self._update(
            job_id, "SET #md.#pl.#timeline = :timeline, updated_at = :now", "#status = :queued",
            {"#timeline": "timeline"}, {":timeline": timeline, ":now": utc_now()},
            landed=lambda job: job.status == QUEUED and job.pipeline.timeline == timeline,
        )
        return written.ok

    async def find_stuck(self, older_than_iso: str) -> list[Job]:
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "#status IN (:q, :processing) AND updated_at < :cutoff",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":q": {"S": QUEUED}, ":processing": {"S": PROCESSING}, ":cutoff": {"S": older_than_iso}
            },
            "ConsistentRead": True,
        }
        return [Job.from_item(item) async for item in items(self._db, "scan", **request)]

    async def update_summary(self, job_id: str, fields: dict[str, Any]) -> bool:
        names = {f"#f{i}": name for i, name in enumerate(fields)}
        sets = ", ".join(f"results.#f{i} = :f{i}" for i in range(len(fields)))
        values = {f":f{i}": value for i, value in enumerate(fields.values())}
        written = await self._update(job_id, f"SET {sets}, updated_at = :now", "#status = :completed",
                                     names, {**values, ":now": utc_now(), ":completed": COMPLETED},
                                     landed=lambda job: all((job.results or {}).get(k) == v for k, v in fields.items()))
        return written.ok

    async def delete(self, job_id: str) -> bool:
        response = await self._db.delete_item(TableName=self._table, Key={"job_id": {"S": job_id}},
                                              ReturnValues="ALL_OLD")
        return "Attributes" in response

    async def _update(
        self,
        job_id: str,
        update: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
        *,
        landed: Callable[[Job], bool],
        return_new: bool = False,
    ) -> _Written:
        """A conditional UpdateItem. Refused, it still counts as written when the item
        as it stands shows this write (`landed`): a retry met its own first attempt.

        Only the placeholders the expressions use are sent, as DynamoDB requires.
        """
        expression = f"{update} {condition}"
        used = set(re.findall(r"[#:][A-Za-z0-9_]+", expression))
        all_names = {**_NAMES, **names}
        all_values = {":queued": QUEUED, ":processing": PROCESSING, ":running": RUNNING, ":done": DONE, **values}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"job_id": {"S": job_id}},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {k: v for k, v in all_names.items() if k in used},
            "ExpressionAttributeValues": {k: to_attribute(v) for k, v in all_values.items() if k in used},
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if return_new:
            request["ReturnValues"] = "ALL_NEW"
        try:
            response = await self._db.update_item(**request)
        except Exception as error:
            if not is_conditional_failure(error):
                raise
            item = conditional_failure_item(error)
            current = Job.from_item(item) if item else None
            return _Written(current is not None and landed(current), current)
        return _Written(True, Job.from_item(from_item(response["Attributes"])) if return_new else None)
