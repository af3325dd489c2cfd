"""Finding 6 of issue 19: an alert names the patient and leaves the system, so every send,
webhook or SNS, is audited first as `alert.sent` (as results sent to the EHR are), and none
goes out when the record cannot be written. A real HTTP receiver; SNS on moto's server."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest

from services.results.alerts.delivery import AlertEvent, DeliveryDeps, DeliveryFailed, deliver_alert
from services.results.alerts.store import Alert, InMemoryAlertStore
from shared.domain.clinics import AlertDelivery, ClinicDirectory, ClinicProfile, WebhookTarget
from shared.fakes import MemoryAuditStore
from shared.identity.audit import AuditTrail, patient_ref
from tests.webhooks import SECRET, SECRET_ENV, WebhookReceiver

KEY = "alerts-audit-test-key"


def _alert(clinic: str) -> Alert:
    return Alert(clinic_id=clinic, alert_id="alert-0001", patient_id="patient-501", rule="risk", severity="high",
                 title="High risk", summary="The check-in was rated high risk.", job_id="job-" + "a" * 32,
                 triggered_at="2026-12-01T09:00:00Z", created_at="2026-12-01T09:00:01Z")


def _sent(store: MemoryAuditStore) -> list[dict]:
    return [r for r in store.records.values() if r["action"] == "alert.sent"]


def test_alert_deliveries_audited_for_webhooks():
    os.environ[SECRET_ENV] = SECRET
    receiver = WebhookReceiver().start()
    try:
        async def scenario(store: MemoryAuditStore) -> dict:
            alerts = InMemoryAlertStore()
            await alerts.put_new(_alert("clinic-north"))
            clinics = ClinicDirectory(clinics={"clinic-north": ClinicProfile(delivery=AlertDelivery(
                webhook=WebhookTarget(url=f"{receiver.url}/hooks/north", secret_env=SECRET_ENV)))})
            async with httpx.AsyncClient() as http:
                deps = DeliveryDeps(alerts, clinics, http, audit=AuditTrail(store, KEY, "schizodot-results"))
                return await deliver_alert(AlertEvent(clinic_id="clinic-north", alert_id="alert-0001"), deps)

        store = MemoryAuditStore()
        assert asyncio.run(scenario(store)) == {"webhook": "delivered"}
        [record] = _sent(store)
        assert (record["clinic_id"], record["job_id"], record["actor"]) == ("clinic-north", "job-" + "a" * 32,
                                                                           "schizodot-results")
        assert record["patient_ref"] == patient_ref(KEY, "clinic-north.patient-501")
        assert record["detail"]["channel"] == "webhook" and record["detail"]["alert_id"] == "alert-0001"
        assert len(receiver.at("/hooks/north")) == 1
        broken = MemoryAuditStore()
        broken.failing = True
        with pytest.raises(DeliveryFailed, match="audit trail"):
            asyncio.run(scenario(broken))
        assert len(receiver.at("/hooks/north")) == 1  # nothing went out unaudited
    finally:
        receiver.stop()


@pytest.mark.server
def test_alert_deliveries_audited_for_sns(aws_server):
    from shared.aws.clients import async_client, sync_client

    topic = sync_client(aws_server, "sns").create_topic(Name="alerts-audit-north")["TopicArn"]

    async def scenario(store: MemoryAuditStore) -> dict:
        alerts = InMemoryAlertStore()
        await alerts.put_new(_alert("clinic-north"))
        clinics = ClinicDirectory(clinics={"clinic-north": ClinicProfile(delivery=AlertDelivery(sns_topic_arn=topic))})
        async with async_client(aws_server, "sns") as sns, httpx.AsyncClient() as http:
            deps = DeliveryDeps(alerts, clinics, http, sns=sns, audit=AuditTrail(store, KEY, "schizodot-results"))
            return await deliver_alert(AlertEvent(clinic_id="clinic-north", alert_id="alert-0001"), deps)

    store = MemoryAuditStore()
    assert asyncio.run(scenario(store)) == {"sns": "delivered"}
    [record] = _sent(store)
    assert record["detail"]["channel"] == "sns" and record["patient_ref"] == patient_ref(KEY, "clinic-north.patient-501")
