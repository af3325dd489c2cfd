"""Alert records in DynamoDB (`SchizodotAlerts`), and an in-memory twin for tests.

Key: `clinic_id` (hash) + `alert_id` (range). An alert id starts with the
compact time of what triggered it, so a clinic's alerts sort by time, and ends
with a hash of (clinic, patient, rule, trigger): the same finding evaluated
twice (a redelivered result, a repeated sweep) names the same alert, and
`put_new` stores it once.

Two indexes (the table is defined with the others in shared/runtime/infra.py):
`open_since` exists only while an alert is open, so the sparse index
`clinic_id-open_since-index` lists a clinic's open alerts without reading
acknowledged ones; `patient_key` (the stored patient key `clinic.patient`,
shared.identity.principal) finds one patient's alerts, for the patient page and erasure.

Delivery state is kept per channel (`delivery.webhook`, `delivery.sns`):
pending -> delivered, or retrying (attempts, last error) -> dead_lettered when
the queue gives up. Acknowledgement is separate: an undelivered alert is still
open and shown in the console.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.aws.dynamo import delete_queried, from_item, is_conditional_failure, items, to_attribute, to_item
from shared.domain.patients import ClinicPatientId, PatientKey
from shared.runtime.infra import OPEN_ALERTS_INDEX, PATIENT_ALERTS_INDEX

NOTE_MAX = 2000

Severity = Literal["low", "moderate", "high"]
ChannelState = Literal["pending", "delivered", "retrying", "dead_lettered"]


def alert_id_for(clinic_id: str, patient_id: ClinicPatientId, rule: str, trigger: str, triggered_at: str) -> str:
    digest = hashlib.sha256(f"{clinic_id}\n{patient_id}\n{rule}\n{trigger}".encode()).hexdigest()[:16]
    stamp = triggered_at[:19].replace("-", "").replace(":", "")
    return f"{stamp}Z-{digest}"


class ChannelDelivery(BaseModel):
    model_config = ConfigDict(extra="ignore")

    state: ChannelState = "pending"
    attempts: int = 0
    last_error: str | None = None
    last_attempt_at: str | None = None
    delivered_at: str | None = None


class Alert(BaseModel):
    model_config = ConfigDict(extra="ignore")

    clinic_id: str
    alert_id: str
    patient_id: ClinicPatientId
    rule: str
    severity: Severity
    title: str
    summary: str = Field(description="one sentence a clinician reads first")
    evidence: dict[str, Any] = Field(default_factory=dict)
    job_id: str | None = None
    triggered_at: str
    created_at: str
    state: Literal["open", "acknowledged"] = "open"
    acknowledged_by: str | None = None
    acknowledged_at: str | None = None
    note: str | None = None
    delivery: dict[str, ChannelDelivery] = Field(default_factory=dict)

    def to_item(self) -> dict[str, Any]:
        item = self.model_dump(mode="json", exclude_none=True)
        item["patient_key"] = str(PatientKey.of(self.clinic_id, self.patient_id))
        if self.state == "open":
            item["open_since"] = self.created_at
        return item

    @classmethod
    def from_stored(cls, item: dict[str, Any]) -> "Alert":
        return cls.model_validate(item)


class AlreadyAcknowledged(Exception):
    def __init__(self, alert: Alert) -> None:
        super().__init__(f"acknowledged by {alert.acknowledged_by} at {alert.acknowledged_at}")
        self.alert = alert


class AlertStore(Protocol):
    async def put_new(self, alert: Alert) -> bool: ...
    async def get(self, clinic_id: str, alert_id: str) -> Alert | None: ...
    async def open_alerts(self, clinic_id: str) -> list[Alert]: ...
    async def for_patient(self, clinic_id: str, patient_id: ClinicPatientId, limit: int = 50) -> list[Alert]: ...
    async def acknowledge(self, clinic_id: str, alert_id: str, by: str, note: str, at: str) -> Alert | None: ...
    async def record_delivery(self, clinic_id: str, alert_id: str, channel: str, delivery: ChannelDelivery) -> None: ...
    async def delete_for_patient(self, clinic_id: str, patient_id: ClinicPatientId) -> int:
        """Erasure: remove every alert of the patient; how many there were."""


class DynamoAlertStore:
    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    def _key(self, clinic_id: str, alert_id: str) -> dict[str, Any]:
        return {"clinic_id": {"S": clinic_id}, "alert_id": {"S": alert_id}}

    async def put_new(self, alert: Alert) -> bool:
        try:
            await self._db.put_item(TableName=self._table, Item=to_item(alert.to_item()),
                                    ConditionExpression="attribute_not_exists(alert_id)")
            return True
        except Exception as error:
            if is_conditional_failure(error):
                return False
            raise

    async def get(self, clinic_id: str, alert_id: str) -> Alert | None:
        response = await self._db.get_item(TableName=self._table, Key=self._key(clinic_id, alert_id),
                                           ConsistentRead=True)
        return Alert.from_stored(from_item(response["Item"])) if "Item" in response else None

    async def _query(self, *, limit: int | None = None, **request: Any) -> list[Alert]:
        """Every alert the query finds, or the first `limit` of them."""
        pages = {"PageSize": limit, "MaxItems": limit} if limit else {}
        return [Alert.from_stored(item)
                async for item in items(self._db, "query", TableName=self._table, **request, PaginationConfig=pages)]

    async def open_alerts(self, clinic_id: str) -> list[Alert]:
        return await self._query(IndexName=OPEN_ALERTS_INDEX, KeyConditionExpression="clinic_id = :c",
                                 ExpressionAttributeValues={":c": {"S": clinic_id}}, ScanIndexForward=False)

    async def for_patient(self, clinic_id: str, patient_id: ClinicPatientId, limit: int = 50) -> list[Alert]:
        found = await self._query(IndexName=PATIENT_ALERTS_INDEX, KeyConditionExpression="patient_key = :p",
                                  ExpressionAttributeValues={":p": {"S": str(PatientKey.of(clinic_id, patient_id))}},
                                  ScanIndexForward=False, limit=limit)
        return found

    async def delete_for_patient(self, clinic_id: str, patient_id: ClinicPatientId) -> int:
        return await delete_queried(self._db, self._table, {
            "IndexName": PATIENT_ALERTS_INDEX, "KeyConditionExpression": "patient_key = :p",
            "ExpressionAttributeValues": {":p": {"S": str(PatientKey.of(clinic_id, patient_id))}}}, ("clinic_id", "alert_id"))

    async def acknowledge(self, clinic_id: str, alert_id: str, by: str, note: str, at: str) -> Alert | None:
        """None when there is no such alert; AlreadyAcknowledged when someone was first."""
        try:
            response = await self._db.update_item(
                TableName=self._table, Key=self._key(clinic_id, alert_id),
                UpdateExpression="SET #state = :ack, acknowledged_by = :by, acknowledged_at = :at, #note = :note"
                                 " REMOVE open_since",
                ConditionExpression="attribute_exists(alert_id) AND #state = :open",
                ExpressionAttributeNames={"#state": "state", "#note": "note"},
                ExpressionAttributeValues={":ack": {"S": "acknowledged"}, ":open": {"S": "open"},
                                           ":by": {"S": by}, ":at": {"S": at}, ":note": {"S": note[:NOTE_MAX]}},
                ReturnValues="ALL_NEW",
            )
        except Exception as error:
            if not is_conditional_failure(error):
                raise
            existing = await self.get(clinic_id, alert_id)
            if existing is None:
                return None
            raise AlreadyAcknowledged(existing) from error
        return Alert.from_stored(from_item(response["Attributes"]))

    async def record_delivery(self, clinic_id: str, alert_id: str, channel: str, delivery: ChannelDelivery) -> None:
        # A channel once delivered stays delivered: a late failure report cannot undo it.
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(clinic_id, alert_id),
                UpdateExpression="SET #dl.#ch = :d",
                ConditionExpression="attribute_exists(alert_id) AND "
                                    "(attribute_not_exists(#dl.#ch.#state) OR #dl.#ch.#state <> :delivered)",
                ExpressionAttributeNames={"#dl": "delivery", "#ch": channel, "#state": "state"},
                ExpressionAttributeValues={":d": to_attribute(delivery.model_dump(mode="json", exclude_none=True)),
                                           ":delivered": {"S": "delivered"}},
            )
        except Exception as error:
            if not is_conditional_failure(error):
                raise


class InMemoryAlertStore:
    """The same contract in a dict, for fast tests of what uses alerts."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str], Alert] = {}

    async def put_new(self, alert: Alert) -> bool:
        key = (alert.clinic_id, alert.alert_id)
        if key in self.items:
            return False
        self.items[key] = alert.model_copy(deep=True)
        return True

    async def get(self, clinic_id: str, alert_id: str) -> Alert | None:
        alert = self.items.get((clinic_id, alert_id))
        return alert.model_copy(deep=True) if alert else None

    async def open_alerts(self, clinic_id: str) -> list[Alert]:
        found = [a for (c, _), a in self.items.items() if c == clinic_id and a.state == "open"]
        return sorted(found, key=lambda a: a.created_at, reverse=True)

    async def for_patient(self, clinic_id: str, patient_id: ClinicPatientId, limit: int = 50) -> list[Alert]:
        patient_id = ClinicPatientId(patient_id)  # a stored key is a TypeError, as the table's index has it
        found = [a for (c, _), a in self.items.items() if c == clinic_id and a.patient_id == patient_id]
        return sorted(found, key=lambda a: a.alert_id, reverse=True)[:limit]

    async def acknowledge(self, clinic_id: str, alert_id: str, by: str, note: str, at: str) -> Alert | None:
        alert = self.items.get((clinic_id, alert_id))
        if alert is None:
            return None
        if alert.state != "open":
            raise AlreadyAcknowledged(alert)
        alert.state, alert.acknowledged_by, alert.acknowledged_at, alert.note = "acknowledged", by, at, note[:NOTE_MAX]
        return alert.model_copy(deep=True)

    async def record_delivery(self, clinic_id: str, alert_id: str, channel: str, delivery: ChannelDelivery) -> None:
        alert = self.items.get((clinic_id, alert_id))
        if alert is not None and (alert.delivery.get(channel) or ChannelDelivery()).state != "delivered":
            alert.delivery[channel] = delivery

    async def delete_for_patient(self, clinic_id: str, patient_id: ClinicPatientId) -> int:
        patient_id = ClinicPatientId(patient_id)
        mine = [key for key, alert in self.items.items() if key[0] == clinic_id and alert.patient_id == patient_id]
        for key in mine:
            del self.items[key]
        return len(mine)
