"""The clinic's patients and their last check-in (`SchizodotClinicPatients`).

SchizodotUsers is keyed by patient, so "which patients does this clinic have"
cannot be read from it. The results service records every stored result here
(`record_checkin`); the console's patient list and the no-check-in sweep read
it. Key: `clinic_id` (hash) + `patient_id` (range, the clinic's own id; the
table is defined in shared/runtime/infra.py). `last_checkin_at` only moves forward, so
a redelivered older result cannot set it back. Erasure removes the patient's row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from shared.aws.dynamo import from_item, is_conditional_failure, items
from shared.domain.patients import ClinicPatientId


@dataclass(frozen=True)
class RosterEntry:
    clinic_id: str
    patient_id: ClinicPatientId
    last_checkin_at: str | None = None
    last_job_id: str | None = None


class Roster(Protocol):
    """Patients are named by their clinic-local id beside the clinic (a stored key is a TypeError)."""

    async def record_checkin(self, clinic_id: str, patient_id: ClinicPatientId, job_id: str, at: str) -> None: ...
    async def get(self, clinic_id: str, patient_id: ClinicPatientId) -> RosterEntry | None: ...
    async def patients(self, clinic_id: str) -> list[RosterEntry]: ...
    async def clinics(self) -> list[str]: ...
    async def delete(self, clinic_id: str, patient_id: ClinicPatientId) -> bool:
        """Erasure: remove the patient from the clinic's list (True when it was there)."""


class DynamoRoster:
    def __init__(self, dynamodb: Any, table_name: str) -> None:
        self._db = dynamodb
        self._table = table_name

    async def record_checkin(self, clinic_id: str, patient_id: ClinicPatientId, job_id: str, at: str) -> None:
        try:
            await self._db.update_item(
                TableName=self._table, Key=_key(clinic_id, patient_id),
                UpdateExpression="SET last_checkin_at = :at, last_job_id = :job",
                ConditionExpression="attribute_not_exists(last_checkin_at) OR last_checkin_at < :at",
                ExpressionAttributeValues={":at": {"S": at}, ":job": {"S": job_id}},
            )
        except Exception as error:
            if not is_conditional_failure(error):  # an older result: the newer one stays
                raise

    async def get(self, clinic_id: str, patient_id: ClinicPatientId) -> RosterEntry | None:
        response = await self._db.get_item(TableName=self._table, Key=_key(clinic_id, patient_id), ConsistentRead=True)
        return _entry(from_item(response["Item"])) if "Item" in response else None

    async def patients(self, clinic_id: str) -> list[RosterEntry]:
        request: dict[str, Any] = {"TableName": self._table, "KeyConditionExpression": "clinic_id = :c",
                                   "ExpressionAttributeValues": {":c": {"S": clinic_id}}}
        return [_entry(item) async for item in items(self._db, "query", **request)]

    async def clinics(self) -> list[str]:
        """Every clinic with a patient (a scan: for the daily sweep, not for pages)."""
        request: dict[str, Any] = {"TableName": self._table, "ProjectionExpression": "clinic_id"}
        return sorted({item["clinic_id"] async for item in items(self._db, "scan", **request)})

    async def delete(self, clinic_id: str, patient_id: ClinicPatientId) -> bool:
        response = await self._db.delete_item(TableName=self._table, Key=_key(clinic_id, patient_id),
                                              ReturnValues="ALL_OLD")
        return "Attributes" in response


def _key(clinic_id: str, patient_id: ClinicPatientId) -> dict[str, dict[str, str]]:
    """The row's key: the clinic and its own id of the patient (a stored patient key is a TypeError)."""
    return {"clinic_id": {"S": clinic_id}, "patient_id": {"S": str(ClinicPatientId(patient_id))}}


def _entry(item: dict[str, Any]) -> RosterEntry:
    return RosterEntry(item["clinic_id"], ClinicPatientId(item["patient_id"]), item.get("last_checkin_at"),
                       item.get("last_job_id"))


class InMemoryRoster:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], RosterEntry] = {}

    async def record_checkin(self, clinic_id: str, patient_id: ClinicPatientId, job_id: str, at: str) -> None:
        patient_id = ClinicPatientId(patient_id)  # as the table's key checks it
        current = self.entries.get((clinic_id, patient_id))
        if current is None or (current.last_checkin_at or "") < at:
            self.entries[(clinic_id, patient_id)] = RosterEntry(clinic_id, patient_id, at, job_id)

    async def get(self, clinic_id: str, patient_id: ClinicPatientId) -> RosterEntry | None:
        return self.entries.get((clinic_id, ClinicPatientId(patient_id)))

    async def patients(self, clinic_id: str) -> list[RosterEntry]:
        return sorted((e for (c, _), e in self.entries.items() if c == clinic_id), key=lambda e: e.patient_id)

    async def clinics(self) -> list[str]:
        return sorted({c for c, _ in self.entries})

    async def delete(self, clinic_id: str, patient_id: ClinicPatientId) -> bool:
        return self.entries.pop((clinic_id, ClinicPatientId(patient_id)), None) is not None
