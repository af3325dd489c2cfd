"""SchizodotUsers access pattern 5: the results service is its one writer (its IAM role the only one allowed)."""

from __future__ import annotations

from typing import Any, Protocol

from shared.aws.dynamo import delete_queried, from_item, is_conditional_failure, put_if_absent, to_attribute
from shared.domain.patients import PatientKey


class ResultsStore(Protocol):
    async def save(self, item: dict[str, Any]) -> bool:
        """Save a job's item once. True when the item is stored as given, now or by an
        earlier try of the same save; False when its key holds another item."""

    async def delete_patient(self, patient_key: PatientKey) -> int:
        """Erasure: remove every item of the patient; how many there were."""

    async def get(self, user_id: PatientKey, timestamp: str) -> dict[str, Any] | None:
        """One item by its key, read consistently (a review reads what the last write left)."""

    async def replace_compliance(self, user_id: PatientKey, timestamp: str, compliance: dict[str, Any],
                                 expected_revision: int) -> bool:
        """Set the item's `results.compliance` if its review is still at `expected_revision`
        (0: never reviewed); False when another reviewer wrote first (read again and retry)."""


class ResultsWriter:
    """`ResultsStore` on DynamoDB (in memory: `shared.fakes.InMemoryHistory`)."""

    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    async def save(self, item: dict[str, Any]) -> bool:
        return await put_if_absent(self._db, self._table, item, "user_id")

    async def get(self, user_id: PatientKey, timestamp: str) -> dict[str, Any] | None:
        response = await self._db.get_item(TableName=self._table, ConsistentRead=True,
                                           Key={"user_id": {"S": user_id}, "timestamp": {"S": timestamp}})
        return from_item(response["Item"]) if "Item" in response else None

    async def replace_compliance(self, user_id: PatientKey, timestamp: str, compliance: dict[str, Any],
                                 expected_revision: int) -> bool:
        names = {"#r": "results", "#c": "compliance", "#v": "review", "#n": "revision"}
        values = {":c": to_attribute(compliance)}
        if expected_revision:
            condition = "#r.#c.#v.#n = :prev"
            values[":prev"] = to_attribute(expected_revision)
        else:
            condition = "attribute_exists(user_id) AND attribute_not_exists(#r.#c.#v)"
            names = {k: v for k, v in names.items() if k != "#n"}
        try:
            await self._db.update_item(
                TableName=self._table, Key={"user_id": {"S": user_id}, "timestamp": {"S": timestamp}},
                UpdateExpression="SET #r.#c = :c", ConditionExpression=condition,
                ExpressionAttributeNames=names, ExpressionAttributeValues=values)
        except Exception as error:
            if is_conditional_failure(error):
                return False
            raise
        return True

    async def delete_patient(self, patient_key: PatientKey) -> int:
        return await delete_queried(self._db, self._table, {
            "KeyConditionExpression": "user_id = :u", "ExpressionAttributeValues": {":u": {"S": str(PatientKey.parse(patient_key))}},
            "ProjectionExpression": "user_id, #t", "ExpressionAttributeNames": {"#t": "timestamp"},
            "ConsistentRead": True}, ("user_id", "timestamp"))
