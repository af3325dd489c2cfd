"""One contract for the alert store and the roster, run on DynamoDB (moto's server) and on the in-memory twins."""

from __future__ import annotations

import asyncio
import uuid
from contextlib import asynccontextmanager

import pytest

from services.results.alerts.roster import DynamoRoster, InMemoryRoster
from services.results.alerts.store import (
    Alert,
    AlreadyAcknowledged,
    ChannelDelivery,
    DynamoAlertStore,
    InMemoryAlertStore,
    alert_id_for,
)
from shared.aws.clients import AsyncClients
from shared.domain.patients import ClinicPatientId, PatientKey


@asynccontextmanager
async def stores(kind: str, settings):
    if kind == "memory":
        yield InMemoryAlertStore(), InMemoryRoster()
        return
    async with AsyncClients(settings) as clients:
        yield (DynamoAlertStore(clients.dynamodb, settings.alerts_table),
               DynamoRoster(clients.dynamodb, settings.clinic_patients_table))


def alert(clinic: str, patient: str, rule: str, at: str, trigger: str = "job-000000000001") -> Alert:
    return Alert(clinic_id=clinic, alert_id=alert_id_for(clinic, patient, rule, trigger, at), patient_id=patient,
                 rule=rule, severity="high", title="Risk level high", summary="<b>risky</b>", evidence={"x": 1.5},
                 job_id=trigger, triggered_at=at, created_at=at)


@pytest.mark.parametrize("kind", ["memory", "dynamodb"])
def test_alert_store_contract(kind, aws_server):
    clinic, other = f"clinic-{uuid.uuid4().hex[:6]}", f"clinic-{uuid.uuid4().hex[:6]}"

    async def scenario():
        async with stores(kind, aws_server) as (alerts, _):
            first = alert(clinic, "patient-1", "risk", "2026-11-02T10:00:00.000000Z")
            second = alert(clinic, "patient-1", "no_checkin", "2026-11-05T10:00:00.000000Z", "2026-10-29")
            third = alert(clinic, "patient-2", "risk", "2026-11-03T10:00:00.000000Z")
            assert await alerts.put_new(first) and await alerts.put_new(second) and await alerts.put_new(third)
            assert not await alerts.put_new(first)  # the same finding again: stored once
            assert await alerts.put_new(alert(other, "patient-1", "risk", "2026-11-02T10:00:00.000000Z"))

            assert [a.alert_id for a in await alerts.for_patient(clinic, "patient-1")] == [
                second.alert_id, first.alert_id]
            assert {a.alert_id for a in await alerts.open_alerts(clinic)} == {
                first.alert_id, second.alert_id, third.alert_id}

            acked = await alerts.acknowledge(clinic, first.alert_id, "dr-a", "called the patient", "2026-11-02T11:00Z")
            assert acked.state == "acknowledged" and acked.note == "called the patient" and acked.acknowledged_by == "dr-a"
            assert first.alert_id not in {a.alert_id for a in await alerts.open_alerts(clinic)}
            with pytest.raises(AlreadyAcknowledged):
                await alerts.acknowledge(clinic, first.alert_id, "dr-b", "again", "2026-11-02T12:00Z")
            assert await alerts.acknowledge(other, second.alert_id, "dr-x", "n", "t") is None  # another clinic's
            assert await alerts.acknowledge(clinic, "20261102T100000Z-0000", "dr-a", "n", "t") is None

            await alerts.record_delivery(clinic, second.alert_id, "webhook",
                                         ChannelDelivery(state="retrying", attempts=1, last_error="HTTP 500"))
            await alerts.record_delivery(clinic, second.alert_id, "webhook",
                                         ChannelDelivery(state="delivered", attempts=2, delivered_at="t2"))
            await alerts.record_delivery(clinic, second.alert_id, "webhook",  # a late report cannot undo it
                                         ChannelDelivery(state="dead_lettered", attempts=2, last_error="late"))
            stored = await alerts.get(clinic, second.alert_id)
            assert stored.delivery["webhook"].state == "delivered" and stored.delivery["webhook"].attempts == 2
            assert stored.evidence == {"x": 1.5} and stored.summary == "<b>risky</b>"
            assert await alerts.get(other, second.alert_id) is None

            # erasure: every alert of the patient goes, nobody else's
            assert await alerts.delete_for_patient(clinic, "patient-1") == 2
            assert await alerts.for_patient(clinic, "patient-1") == []
            assert await alerts.delete_for_patient(clinic, "patient-1") == 0
            assert [a.alert_id for a in await alerts.for_patient(clinic, "patient-2")] == [third.alert_id]
            assert len(await alerts.for_patient(other, "patient-1")) == 1
    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["memory", "dynamodb"])
def test_roster_contract(kind, aws_server):
    clinic = f"clinic-{uuid.uuid4().hex[:6]}"

    async def scenario():
        async with stores(kind, aws_server) as (_, roster):
            await roster.record_checkin(clinic, "patient-2", "job-000000000002", "2026-11-03T10:00:00Z")
            await roster.record_checkin(clinic, "patient-1", "job-000000000003", "2026-11-05T10:00:00Z")
            await roster.record_checkin(clinic, "patient-1", "job-000000000001", "2026-11-01T10:00:00Z")  # older
            entries = await roster.patients(clinic)
            assert [(e.patient_id, e.last_job_id) for e in entries] == [
                ("patient-1", "job-000000000003"), ("patient-2", "job-000000000002")]
            assert (await roster.get(clinic, "patient-1")).last_checkin_at == "2026-11-05T10:00:00Z"
            assert await roster.get(clinic, "patient-9") is None
            assert clinic in await roster.clinics()
            assert await roster.delete(clinic, "patient-1") and not await roster.delete(clinic, "patient-1")
            assert [e.patient_id for e in await roster.patients(clinic)] == ["patient-2"]
    asyncio.run(scenario())


@pytest.mark.parametrize("kind", ["memory", "dynamodb"])
def test_the_roster_and_the_alerts_name_a_patient_by_the_clinics_own_id_never_by_the_stored_key(kind, aws_server):
    """The roster's rows and the alerts are keyed by the clinic-local id beside the clinic: a stored patient
    key passed for it is a TypeError at the store, never a row or an alert under a second name."""
    clinic = f"clinic-{uuid.uuid4().hex[:6]}"
    key = PatientKey.of(clinic, "patient-1")

    async def scenario():
        async with stores(kind, aws_server) as (alerts, roster):
            for call in (roster.record_checkin(clinic, key, "job-000000000001", "2026-11-01T10:00:00Z"),
                         roster.get(clinic, key), roster.delete(clinic, key),
                         alerts.for_patient(clinic, key), alerts.delete_for_patient(clinic, key)):
                with pytest.raises(TypeError, match="a PatientKey is not a ClinicPatientId"):
                    await call
            assert await roster.patients(clinic) == []
            await roster.record_checkin(clinic, key.patient, "job-000000000001", "2026-11-01T10:00:00Z")
            [entry] = await roster.patients(clinic)
            assert entry.patient_id == "patient-1" and isinstance(entry.patient_id, ClinicPatientId)
            assert isinstance((await roster.get(clinic, key.patient)).patient_id, ClinicPatientId)
    asyncio.run(scenario())
    with pytest.raises(ValueError, match="has no '.'"):  # an alert under a stored key is no alert
        alert(clinic, str(key), "risk", "2026-11-02T10:00:00.000000Z")
