"""The erasures' records (`SchizodotErasures`: who asked, the clinic, the patient's pseudonym, never the
id; the receipt's counts) and the receipt the API answers with."""

from __future__ import annotations

import asyncio
import secrets
import time
from typing import Any, Protocol

from pydantic import BaseModel

from shared.aws.dynamo import from_item, is_conditional_failure, to_attribute, to_item
from shared.domain.checkin import utc_now


class Receipt(BaseModel):
    erasure_id: str
    status: str  # requested | running | done
    patient_id: str | None = None  # echoed to the caller only; never stored
    requested_at: str
    finished_at: str | None = None
    counts: dict[str, int] | None = None
    late: dict[str, int] | None = None


class ErasureStore(Protocol):
    async def create(self, erasure_id: str, clinic_id: str, patient_ref: str, requested_by: str) -> None: ...
    async def get(self, erasure_id: str) -> dict[str, Any] | None: ...
    async def set_counts(self, erasure_id: str, counts: dict[str, int]) -> dict[str, int]:
        """Record the receipt's counts once; returns the counts recorded (the first run's)."""
    async def finish(self, erasure_id: str, *, late: dict[str, int] | None = None) -> None: ...


class DynamoErasures:
    """`ErasureStore` on `SchizodotErasures` (key `erasure_id`)."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, erasure_id: str, clinic_id: str, patient_ref: str, requested_by: str) -> None:
        await self._db.put_item(TableName=self._table, Item=to_item({
            "erasure_id": erasure_id, "clinic_id": clinic_id, "patient_ref": patient_ref,
            "requested_by": requested_by, "requested_at": utc_now(), "status": "requested"}),
            ConditionExpression="attribute_not_exists(erasure_id)")

    async def get(self, erasure_id: str) -> dict[str, Any] | None:
        response = await self._db.get_item(TableName=self._table, Key={"erasure_id": {"S": erasure_id}},
                                           ConsistentRead=True)
        return from_item(response["Item"]) if "Item" in response else None

    async def set_counts(self, erasure_id: str, counts: dict[str, int]) -> dict[str, int]:
        try:
            await self._db.update_item(
                TableName=self._table, Key={"erasure_id": {"S": erasure_id}},
                UpdateExpression="SET #counts = :counts, #status = :running",
                ConditionExpression="attribute_exists(erasure_id) AND attribute_not_exists(#counts)",
                ExpressionAttributeNames={"#counts": "counts", "#status": "status"},
                ExpressionAttributeValues={":counts": to_attribute(counts), ":running": {"S": "running"}})
            return counts
        except Exception as error:
            if not is_conditional_failure(error):
                raise
        record = await self.get(erasure_id)
        return (record or {}).get("counts") or counts

    async def finish(self, erasure_id: str, *, late: dict[str, int] | None = None) -> None:
        update = "SET #status = :done, finished_at = if_not_exists(finished_at, :now)"
        values: dict[str, Any] = {":done": {"S": "done"}, ":now": {"S": utc_now()}}
        if late is not None:
            update += ", late = :late"
            values[":late"] = to_attribute(late)
        await self._db.update_item(TableName=self._table, Key={"erasure_id": {"S": erasure_id}},
                                   UpdateExpression=update, ExpressionAttributeNames={"#status": "status"},
                                   ExpressionAttributeValues=values)


class MemoryErasures:
    """`ErasureStore` in memory."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    async def create(self, erasure_id: str, clinic_id: str, patient_ref: str, requested_by: str) -> None:
        self.records[erasure_id] = {"erasure_id": erasure_id, "clinic_id": clinic_id, "patient_ref": patient_ref,
                                    "requested_by": requested_by, "requested_at": utc_now(), "status": "requested"}

    async def get(self, erasure_id: str) -> dict[str, Any] | None:
        return dict(self.records[erasure_id]) if erasure_id in self.records else None

    async def set_counts(self, erasure_id: str, counts: dict[str, int]) -> dict[str, int]:
        record = self.records[erasure_id]
        record.setdefault("counts", counts)
        record["status"] = "running"
        return record["counts"]

    async def finish(self, erasure_id: str, *, late: dict[str, int] | None = None) -> None:
        record = self.records[erasure_id]
        record["status"] = "done"
        record.setdefault("finished_at", utc_now())
        if late is not None:
            record["late"] = late


def new_erasure_id() -> str:
    return f"erasure-{secrets.token_hex(8)}"


def receipt_of(record: dict[str, Any], patient_id: str | None = None) -> Receipt:
    return Receipt(erasure_id=record["erasure_id"], status=record["status"], patient_id=patient_id,
                   requested_at=record["requested_at"], finished_at=record.get("finished_at"),
                   counts=record.get("counts"), late=record.get("late"))


async def wait_for_erasure(erasures: ErasureStore, erasure_id: str, seconds: float) -> dict[str, Any] | None:
    """The erasure's record once done, or as it stands after `seconds`."""
    deadline = time.monotonic() + seconds
    record = await erasures.get(erasure_id)
    while record is not None and record["status"] != "done" and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        record = await erasures.get(erasure_id)
    return record
