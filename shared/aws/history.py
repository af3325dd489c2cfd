"""Reading a patient's analysis history from SchizodotUsers (access pattern 6).

Reads only: the results service is the one writer of this table
(services/results/stage/writer.py). `HistoryReader` is what fusion and the results
API use; `PatientHistory` is it on DynamoDB and `shared.fakes.InMemoryHistory`
in memory (contract: tests/integration/test_adapters.py).

A stored item holds every block of a check-in (answers with their markers and baselines, the
facial emotion's timeline, the transcript: 30-80 KB). A reader that uses a few of them names
them (`latest_projected`): DynamoDB then sends back only those, and the reader parses only those.
Read capacity is the same (DynamoDB counts the whole item); the bytes sent, serialised and
parsed are what shrink.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import aclosing
from typing import Any, Protocol

from shared.aws.dynamo import items
from shared.domain.patients import PatientKey


def _stored(patient_key: PatientKey) -> str:
    """The partition to read: a stored patient key, never a clinic-local id (a TypeError for one)."""
    return str(PatientKey.parse(patient_key))


def projection(paths: Sequence[str]) -> tuple[str, dict[str, str]]:
    """A ProjectionExpression for dotted attribute paths, every name a placeholder (`timestamp` and
    `status` are DynamoDB reserved words), and its ExpressionAttributeNames."""
    if not paths:
        raise ValueError("a projection names at least one attribute")
    placeholders: dict[str, str] = {}  # attribute name -> its placeholder
    for path in paths:
        for name in path.split("."):
            if not name:
                raise ValueError(f"an empty attribute name in {path!r}")
            placeholders.setdefault(name, f"#p{len(placeholders)}")
    expression = ", ".join(".".join(placeholders[name] for name in path.split(".")) for path in paths)
    return expression, {placeholder: name for name, placeholder in placeholders.items()}


class HistoryReader(Protocol):
    async def latest(self, patient_key: PatientKey, limit: int = 10) -> list[dict[str, Any]]:
        """The patient's newest items, newest first."""

    async def latest_projected(self, patient_key: PatientKey, attributes: Sequence[str],
                               limit: int = 10) -> list[dict[str, Any]]:
        """The patient's newest items, newest first, each holding only `attributes`: dotted paths into
        the item ("job_id", "results.vocal_markers", "results.compliance.verification_status"). A path
        the item lacks is left out of it, as DynamoDB leaves it out."""

    async def for_job(self, patient_key: PatientKey, job_id: str) -> dict[str, Any] | None: ...

    async def page(
        self, patient_key: PatientKey, limit: int, after: dict[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """One page, newest first, and the key to continue after (None when nothing older is left)."""


class PatientHistory:
    """`HistoryReader` on DynamoDB."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    async def latest(self, patient_key: PatientKey, limit: int = 10) -> list[dict[str, Any]]:
        return await self._newest(patient_key, limit)

    async def latest_projected(self, patient_key: PatientKey, attributes: Sequence[str],
                               limit: int = 10) -> list[dict[str, Any]]:
        expression, names = projection(attributes)
        return await self._newest(patient_key, limit, ProjectionExpression=expression, ExpressionAttributeNames=names)

    async def _newest(self, patient_key: PatientKey, limit: int, **request: Any) -> list[dict[str, Any]]:
        """Up to `limit` items, newest first, over as many pages as it takes: DynamoDB ends a page at 1 MB
        of the items it read (whole items, a projection or not), so 50 results of 30-80 KB need several."""
        found = items(self._db, "query", TableName=self._table, KeyConditionExpression="user_id = :u",
                      ExpressionAttributeValues={":u": {"S": _stored(patient_key)}}, ScanIndexForward=False,
                      PaginationConfig={"MaxItems": limit, "PageSize": limit}, **request)
        async with aclosing(found) as pages:
            return [item async for item in pages]

    async def for_job(self, patient_key: PatientKey, job_id: str) -> dict[str, Any] | None:
        request: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "user_id = :u",
            "FilterExpression": "job_id = :j",
            "ExpressionAttributeValues": {":u": {"S": _stored(patient_key)}, ":j": {"S": job_id}},
            "ScanIndexForward": False,
        }
        async with aclosing(items(self._db, "query", **request)) as found:
            async for item in found:
                return item  # the newest match; the pages after it are never read
        return None

    async def page(
        self, patient_key: PatientKey, limit: int, after: dict[str, str] | None = None
    ) -> tuple[list[dict[str, Any]], dict[str, str] | None]:
        """One page of access pattern 6, newest first, and the key to continue after
        (None when nothing older is left). `after` is a key this method returned."""
        start = {"ExclusiveStartKey": {"user_id": {"S": _stored(patient_key)}, "timestamp": {"S": after["timestamp"]}}} \
            if after is not None else {}
        found = await self._newest(patient_key, limit + 1, **start)  # one more than asked: is there another page?
        if len(found) <= limit:
            return found, None
        found = found[:limit]
        return found, {"user_id": _stored(patient_key), "timestamp": found[-1]["timestamp"]}
