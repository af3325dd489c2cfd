"""SchizodotJobs: job lifecycle and per-stage progress, safe under redelivery.

Every stage writes here; the rules that keep the item honest live in one place:
- a job moves queued -> processing -> completed | failed, and a completed or
  failed job never changes again (every write is conditional on an active status);
- each stage runs at most once per job: it claims `metadata.pipeline.stages.<stage>`
  under its SQS message id, so a redelivery of the same message resumes, while a
  duplicate message finds the stage taken or done and stops;
- progress only grows: each stage owns a share of 100 (its weight) and credits it
  with atomic ADDs as it goes, remembering what it credited, so parallel stages
  and redeliveries never double-count; 100 is set only on completion.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass, field
from typing import Any

from shared.domain import RESERVED_METADATA_KEY, utc_now
from shared.dynamo import from_item, is_conditional_failure, put_if_absent, to_attribute
from shared.infra import PATIENT_JOBS_INDEX

QUEUED, PROCESSING, COMPLETED, FAILED = "queued", "processing", "completed", "failed"
ACTIVE_STATUSES = (QUEUED, PROCESSING)

# Share of the progress bar each stage owns; audio and vision split theirs by
# what the media holds (see `plan_weights`). Results owns the rest up to 100.
INGEST_WEIGHT = 10
FUSION_WEIGHT = 10
RESULTS_WEIGHT = 10


def plan_weights(modalities: list[str]) -> dict[str, int]:
    analysis_share = 100 - INGEST_WEIGHT - FUSION_WEIGHT - RESULTS_WEIGHT
    split = {"audio": 25, "vision": 45} if set(modalities) == {"audio", "vision"} else {}
    weights = {"ingest": INGEST_WEIGHT, "fusion": FUSION_WEIGHT}
    for modality in modalities:
        weights[modality] = split.get(modality, analysis_share // len(modalities))
    return weights


class ClaimOutcome(enum.Enum):
    CLAIMED = "claimed"  # this message now runs the stage (first time or resumed)
    ALREADY_DONE = "already_done"  # finished earlier: re-announce downstream, then drop
    TAKEN = "taken"  # another message holds it: drop this duplicate
    JOB_FINISHED = "job_finished"  # completed or failed: nothing more to do
    NO_SUCH_JOB = "no_such_job"


@dataclass
class StageRun:
    """One stage's hold on one job, as returned by `claim_stage`."""

    outcome: ClaimOutcome
    job_id: str
    stage: str
    message_id: str
    job: dict[str, Any] = field(default_factory=dict)
    credited: int = 0

    @property
    def weight(self) -> int:
        return int(self.job.get("metadata", {}).get(RESERVED_METADATA_KEY, {}).get("weights", {}).get(
            self.stage, INGEST_WEIGHT if self.stage == "ingest" else 0
        ))

    @property
    def stage_state(self) -> dict[str, Any]:
        return pipeline_state(self.job).get("stages", {}).get(self.stage, {})


def pipeline_state(job: dict[str, Any]) -> dict[str, Any]:
    return job.get("metadata", {}).get(RESERVED_METADATA_KEY, {})


_NAMES = {
    "#status": "status",
    "#md": "metadata",
    "#pl": RESERVED_METADATA_KEY,
    "#stages": "stages",
    "#state": "state",
}
# The stage is held by this message and the job still runs.
_OWNED = "#status = :processing AND #md.#pl.#stages.#stage.message_id = :mid"


class JobsRepository:
    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    async def create(self, item: dict[str, Any]) -> bool:
        """Put a new job; False when one with that job_id already exists."""
        return await put_if_absent(self._db, self._table, item, "job_id")

    async def get(self, job_id: str) -> dict[str, Any] | None:
        response = await self._db.get_item(
            TableName=self._table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
        )
        return from_item(response["Item"]) if "Item" in response else None

    async def list_for_patient(
        self, patient_id: str, limit: int = 20, status: str | None = None
    ) -> list[dict[str, Any]]:
        """Access pattern 4: a patient's jobs, newest first (GSI)."""
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
        jobs: list[dict[str, Any]] = []
        while len(jobs) < limit:
            # With a status filter a page may hold few matches, so read in larger pages.
            response = await self._db.query(**request, Limit=100 if status else limit - len(jobs))
            jobs.extend(from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                break
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
        return jobs[:limit]

    async def claim_stage(self, job_id: str, stage: str, message_id: str, message: str) -> StageRun:
        for _ in range(3):  # re-read and retry if another writer moved the item in between
            job = await self.get(job_id)
            if job is None:
                return StageRun(ClaimOutcome.NO_SUCH_JOB, job_id, stage, message_id)
            run = StageRun(ClaimOutcome.CLAIMED, job_id, stage, message_id, job)
            state = run.stage_state
            if job["status"] not in ACTIVE_STATUSES:
                run.outcome = ClaimOutcome.JOB_FINISHED
                return run
            if state.get("state") == "done":
                run.outcome = ClaimOutcome.ALREADY_DONE
                return run
            if state and state.get("message_id") != message_id:
                run.outcome = ClaimOutcome.TAKEN
                return run
            if state:  # the same message again: its earlier delivery died mid-stage
                update = "SET #md.#pl.#stages.#stage.attempts = #md.#pl.#stages.#stage.attempts + :one"
                condition = "#md.#pl.#stages.#stage.message_id = :mid AND #md.#pl.#stages.#stage.#state = :running"
            else:
                update = "SET #md.#pl.#stages.#stage = :claim"
                condition = "attribute_not_exists(#md.#pl.#stages.#stage)"
            now = utc_now()
            claim = {"state": "running", "message_id": message_id, "started_at": now, "credited": 0, "attempts": 1}
            attributes = await self._update(
                job_id,
                update + ", #status = :processing, started_at = if_not_exists(started_at, :now),"
                " updated_at = :now, message = :message",
                f"#status IN (:queued, :processing) AND {condition}",
                {"#stage": stage},
                {":now": now, ":message": message, ":mid": message_id, ":claim": claim, ":one": 1},
                return_new=True,
            )
            if attributes is None:
                continue
            run.job = attributes
            run.credited = int(run.stage_state.get("credited", 0))
            return run
        raise RuntimeError(f"could not claim stage {stage} of {job_id}: the job kept changing")

    async def report_progress(self, run: StageRun, fraction: float, message: str) -> bool:
        """Credit `fraction` (0..1) of the stage's share; never more than once per point."""
        target = min(math.floor(run.weight * max(0.0, min(fraction, 1.0))), max(run.weight - 1, 0))
        delta = target - run.credited
        update = "SET updated_at = :now, message = :message"
        condition = _OWNED
        if delta > 0:
            update += ", #md.#pl.#stages.#stage.credited = :credited ADD progress :delta"
            condition += " AND #md.#pl.#stages.#stage.credited = :old"
        ok = await self._update(
            run.job_id, update, condition, {"#stage": run.stage},
            {":now": utc_now(), ":message": message, ":mid": run.message_id,
             ":credited": target, ":delta": delta, ":old": run.credited},
        )
        if ok is not None and delta > 0:
            run.credited = target
        return ok is not None

    async def finish_stage(
        self, run: StageRun, message: str, outputs: dict[str, Any], pipeline_updates: dict[str, Any] | None = None
    ) -> bool:
        """Mark the stage done, credit the rest of its share, record its outputs.

        The rest is computed from what the item says was credited, under a
        condition on that number: a second delivery of the same message working
        beside this one (visibility lapsed) may have credited more meanwhile.
        """
        names = {"#stage": run.stage}
        values: dict[str, Any] = {":now": utc_now(), ":message": message, ":mid": run.message_id,
                                  ":outputs": outputs, ":weight": run.weight}
        update = (
            "SET updated_at = :now, message = :message, #md.#pl.#stages.#stage.#state = :done,"
            " #md.#pl.#stages.#stage.finished_at = :now, #md.#pl.#stages.#stage.outputs = :outputs,"
            " #md.#pl.#stages.#stage.credited = :weight"
        )
        for index, (key, value) in enumerate((pipeline_updates or {}).items()):
            names[f"#u{index}"] = key
            values[f":u{index}"] = value
            update += f", #md.#pl.#u{index} = :u{index}"
        condition = _OWNED + " AND #md.#pl.#stages.#stage.#state = :running AND #md.#pl.#stages.#stage.credited = :old"
        for _ in range(5):
            remaining = run.weight - run.credited
            ok = await self._update(
                run.job_id, update + (" ADD progress :delta" if remaining > 0 else ""), condition, names,
                {**values, ":old": run.credited, ":delta": remaining},
            )
            if ok is not None:
                run.credited = run.weight
                return True
            job = await self.get(run.job_id)
            state = pipeline_state(job or {}).get("stages", {}).get(run.stage, {})
            if not job or job["status"] != PROCESSING or state.get("message_id") != run.message_id \
                    or state.get("state") != "running":
                return False  # finished by another delivery, or the job ended
            run.credited = int(state.get("credited", 0))
        return False

    async def complete(self, run: StageRun, summary: dict[str, Any], message: str) -> bool:
        """The one write that sets progress to 100: the job is done."""
        now = utc_now()
        update = (
            "SET #status = :completed, progress = :hundred, completed_at = :now, updated_at = :now,"
            " results = :results, message = :message, #md.#pl.#stages.#stage.#state = :done,"
            " #md.#pl.#stages.#stage.finished_at = :now"
        )
        ok = await self._update(
            run.job_id, update, _OWNED, {"#stage": run.stage},
            {":now": now, ":completed": COMPLETED, ":hundred": 100, ":results": summary,
             ":message": message, ":mid": run.message_id},
        )
        return ok is not None

    async def fail(self, job_id: str, error: str, stage: str | None = None) -> bool:
        """End an active job as failed with an error a person can act on."""
        where = f" in {stage}" if stage else ""
        ok = await self._update(
            job_id,
            "SET #status = :failed, #error = :error, message = :message, completed_at = :now, updated_at = :now",
            "#status IN (:queued, :processing)",
            {"#error": "error"},
            {":failed": FAILED, ":error": error, ":now": utc_now(), ":message": f"Analysis failed{where}: {error}"},
        )
        return ok is not None

    async def _update(
        self,
        job_id: str,
        update: str,
        condition: str,
        names: dict[str, str],
        values: dict[str, Any],
        *,
        return_new: bool = False,
    ) -> dict[str, Any] | None:
        """A conditional UpdateItem; None when the condition did not hold.

        Only the placeholders the expressions use are sent, as DynamoDB requires.
        """
        expression = f"{update} {condition}"
        used = set(re.findall(r"[#:][A-Za-z0-9_]+", expression))
        all_names = {**_NAMES, **names}
        all_values = {":queued": QUEUED, ":processing": PROCESSING, ":running": "running", ":done": "done",
                      **values}
        request: dict[str, Any] = {
            "TableName": self._table,
            "Key": {"job_id": {"S": job_id}},
            "UpdateExpression": update,
            "ConditionExpression": condition,
            "ExpressionAttributeNames": {k: v for k, v in all_names.items() if k in used},
            "ExpressionAttributeValues": {k: to_attribute(v) for k, v in all_values.items() if k in used},
        }
        if return_new:
            request["ReturnValues"] = "ALL_NEW"
        try:
            response = await self._db.update_item(**request)
        except Exception as error:
            if is_conditional_failure(error):
                return None
            raise
        return from_item(response["Attributes"]) if return_new else {}

    async def find_stuck(self, older_than_iso: str) -> list[dict[str, Any]]:
        """Active jobs not updated since `older_than_iso` (for the sweeper)."""
        request: dict[str, Any] = {
            "TableName": self._table,
            "FilterExpression": "#status IN (:q, :processing) AND updated_at < :cutoff",
            "ExpressionAttributeNames": {"#status": "status"},
            "ExpressionAttributeValues": {
                ":q": {"S": QUEUED}, ":processing": {"S": PROCESSING}, ":cutoff": {"S": older_than_iso}
            },
            "ConsistentRead": True,
        }
        stuck: list[dict[str, Any]] = []
        while True:
            response = await self._db.scan(**request)
            stuck.extend(from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return stuck
            request["ExclusiveStartKey"] = response["LastEvaluatedKey"]
