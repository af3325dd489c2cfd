"""SchizodotUsers access pattern 5: the results service is its one writer (its IAM role the only one allowed)."""

from __future__ import annotations

from typing import Any, Protocol

from shared.dynamo import delete_queried, put_if_absent


class ResultsStore(Protocol):
    async def save(self, item: dict[str, Any]) -> bool:
        """Save a job's item once. True when the item is stored as given, now or by an
        earlier try of the same save; False when its key holds another item."""

    async def delete_patient(self, patient_key: str) -> int:
        """Erasure: remove every item of the patient; how many there were."""


class ResultsWriter:
    """`ResultsStore` on DynamoDB (in memory: `shared.fakes.InMemoryHistory`)."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    async def save(self, item: dict[str, Any]) -> bool:
        return await put_if_absent(self._db, self._table, item, "user_id")

    async def delete_patient(self, patient_key: str) -> int:
        return await delete_queried(self._db, self._table, {
            "KeyConditionExpression": "user_id = :u", "ExpressionAttributeValues": {":u": {"S": patient_key}},
            "ProjectionExpression": "user_id, #t", "ExpressionAttributeNames": {"#t": "timestamp"},
            "ConsistentRead": True}, ("user_id", "timestamp"))
