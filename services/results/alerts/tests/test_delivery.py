"""Alerts raised, queued on a real SQS queue (moto's server) with its dead-letter
queue, delivered by the consumer every stage runs (shared.runtime.messaging.QueueConsumer
with `AlertsHandler`) to a real HTTP receiver that verifies the Standard Webhooks
signature, and to SNS. On DeliveryFailed the consumer keeps the message invisible
for the back-off the handler asks for, so SQS redelivers it; on the last allowed
receive the alert is marked dead-lettered and the message moves to the DLQ."""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import os
import threading
import uuid
from contextlib import contextmanager

import httpx
import pytest
from aiobotocore.session import get_session
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from services.results.alerts.delivery import (
    AlertEvent,
    AlertsHandler,
    DeliveryDeps,
    DeliveryFailed,
    RetryPolicy,
    deliver_alert,
)
from services.results.alerts.roster import DynamoRoster
from services.results.alerts.service import AlertService, SqsAlertQueue
from services.results.alerts.store import DynamoAlertStore
from shared.aws.clients import AsyncClients, sync_client
from shared.domain.clinics import AlertDelivery, ClinicDirectory, ClinicProfile, WebhookTarget
from shared.fakes import InMemoryJobs, MemoryAuditStore
from shared.identity.audit import AuditTrail
from shared.runtime.infra import ALERTS_QUEUE
from shared.runtime.messaging import QueueConsumer
from tests.browser.contract_items import as_stored, history
from tests.conftest import free_port

AUDIT = AuditTrail(MemoryAuditStore(), "alerts-test-key", "schizodot-results")
SECRET = "whsec_" + base64.b64encode(b"clinic-north-signing-secret-0123").decode()


@contextmanager
def receiver(statuses: list[int]):
    """An HTTP server answering each POST with the next status (the last one repeats)."""
    received: list[dict] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            status = statuses[min(len(received) - 1, len(statuses) - 1)]
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/schizodot", received
    finally:
        server.shutdown()


def directory(clinic: str, url: str | None, topic: str | None = None) -> ClinicDirectory:
    os.environ["TEST_NORTH_WEBHOOK_SECRET"] = SECRET
    webhook = WebhookTarget(url=url, secret_env="TEST_NORTH_WEBHOOK_SECRET", timeout_seconds=5) if url else None
    return ClinicDirectory(clinics={clinic: ClinicProfile(
        name="North", timezone="Europe/Berlin", delivery=AlertDelivery(webhook=webhook, sns_topic_arn=topic))})


async def run_queue(sqs, settings, queue_url: str, dlq_url: str, deps: DeliveryDeps, clinic: str, alert_id: str,
                    max_seconds: float = 40) -> list[str]:
    """The results worker's alerts consumer on this queue until the alert's delivery is final;
    returns the states the webhook channel went through, in order."""
    states: list[str] = []
    stop = asyncio.Event()
    consumer = QueueConsumer(sqs=sqs, jobs=InMemoryJobs(), stage=ALERTS_QUEUE, queue_url=queue_url,
                             dead_letter_url=dlq_url, handler=AlertsHandler(deps), settings=settings)
    running = asyncio.create_task(consumer.run(stop))
    deadline = asyncio.get_running_loop().time() + max_seconds
    try:
        while asyncio.get_running_loop().time() < deadline:
            alert = await deps.alerts.get(clinic, alert_id)
            channel = next(iter(alert.delivery.values()), None) if alert else None
            if channel is not None and (not states or states[-1] != f"{channel.state}:{channel.attempts}"):
                states.append(f"{channel.state}:{channel.attempts}")
            if channel is not None and channel.state in ("delivered", "dead_lettered"):
                return states
            await asyncio.sleep(0.1)
        raise AssertionError(f"nothing final within {max_seconds} s: {states}")
    finally:
        stop.set()
        await running


def queues(settings, max_receive: int = 5):
    """A fresh alerts queue and DLQ for one test, as shared.runtime.infra makes them."""
    sqs = sync_client(settings, "sqs")
    name = f"{settings.queue_name(ALERTS_QUEUE)}-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)})})["QueueUrl"]
    return url, dlq


def consumer_settings(settings, max_receive: int = 5):
    return settings.model_copy(update={"max_receive_count": max_receive, "wait_time_seconds": 1,
                                       "visibility_timeout_seconds": 30, "concurrency": 1})


def high_risk_history(patient: str, clinic: str):
    return as_stored(history(patient, clinic, 4, risks=["low", "low", "low", "high"]))


def alert_service(settings, clients, clinics, queue, **options) -> AlertService:
    return AlertService(DynamoAlertStore(clients.dynamodb, settings.alerts_table),
                        DynamoRoster(clients.dynamodb, settings.clinic_patients_table), clinics, queue, **options)


async def raise_alerts(settings, clients, queue_url, clinics, clinic, patient):
    service = alert_service(settings, clients, clinics, SqsAlertQueue(clients.sqs, queue_url))
    items = high_risk_history(patient, clinic)
    created = await service.on_result(clinic, items[-1], list(reversed(items[:-1])))
    again = await service.on_result(clinic, items[-1], list(reversed(items[:-1])))  # a redelivered result
    return service, created, again


def test_a_receiver_that_answers_500_gets_retries_and_the_alert_stays_open_until_delivered(aws_server):
    clinic, patient = f"clinic-{uuid.uuid4().hex[:6]}", "patient-201"
    with receiver([500, 500, 200]) as (url, received):
        async def scenario():
            clinics = directory(clinic, url)
            async with AsyncClients(aws_server) as clients, httpx.AsyncClient() as http:
                raised_on, _ = queues(aws_server)
                service, created, again = await raise_alerts(aws_server, clients, raised_on, clinics, clinic, patient)
                assert [a.rule for a in created] == ["risk", "baseline_decline"] and again == []
                queued = (await clients.sqs.receive_message(QueueUrl=raised_on, MaxNumberOfMessages=10))["Messages"]
                # queued again by the repeat, since its delivery had not started (a crash between store and
                # queue loses nothing); delivery is recorded per channel, so nothing is sent twice
                events = [json.loads(m["Body"]) for m in queued]
                assert {e["data"]["alert_id"] for e in events} == {a.alert_id for a in created}
                assert all(set(e["data"]) == {"clinic_id", "alert_id"} for e in events)  # no PHI queued
                assert {e["type"] for e in events} == {"org.schizodot.alert.raised.v1"}
                # the risk alert's message meets the failing receiver
                queue_url, dlq_url = queues(aws_server)
                deps = DeliveryDeps(service.alerts, clinics, http, audit=AUDIT, console_url="https://results.example/console",
                                    retry=RetryPolicy(base_seconds=1, max_seconds=1))
                risk = next(a for a in created if a.rule == "risk")
                await SqsAlertQueue(clients.sqs, queue_url).send(AlertEvent(clinic_id=clinic, alert_id=risk.alert_id))
                log = await run_queue(clients.sqs, consumer_settings(aws_server), queue_url, dlq_url, deps, clinic,
                                      risk.alert_id)
                dead = await clients.sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=0)
                return risk, log, await service.alerts.get(clinic, risk.alert_id), dead.get("Messages", [])
        risk, log, stored, dead = asyncio.run(scenario())
    assert log == ["retrying:1", "retrying:2", "delivered:3"] and dead == []
    assert len(received) == 3
    assert {r["headers"]["webhook-id"] for r in received} == {risk.alert_id}  # receivers can drop duplicates
    for request in received:
        document = Webhook(SECRET).verify(request["body"], request["headers"])  # the reference verifier
        assert document["type"] == "alert.created"
    data = json.loads(received[-1]["body"])["data"]
    assert data["patient_id"] == patient and data["severity"] == "high" and data["rule"] == "risk"
    assert data["console_url"] == f"https://results.example/console/patients/{patient}#alert-{risk.alert_id}"
    assert stored.state == "open"  # delivered is not acknowledged
    assert stored.delivery["webhook"].state == "delivered" and stored.delivery["webhook"].attempts == 3
    # the signature, not the headers or the clock, is what another clinic's secret fails on
    with pytest.raises(WebhookVerificationError, match="^No matching signature found$"):
        Webhook("whsec_" + base64.b64encode(b"another-clinics-secret-012345678").decode()).verify(
            received[0]["body"], received[0]["headers"])


def test_a_failing_delivery_is_visible_on_the_alert_while_it_retries(aws_server):
    clinic, patient = f"clinic-{uuid.uuid4().hex[:6]}", "patient-202"
    with receiver([500]) as (url, received):
        async def scenario():
            clinics = directory(clinic, url)
            async with AsyncClients(aws_server) as clients, httpx.AsyncClient() as http:
                service, created, _ = await raise_alerts(aws_server, clients, queues(aws_server)[0], clinics, clinic,
                                                         patient)
                deps = DeliveryDeps(service.alerts, clinics, http, audit=AUDIT, retry=RetryPolicy(base_seconds=1, max_seconds=1))
                with pytest.raises(DeliveryFailed):
                    await deliver_alert(AlertEvent(clinic_id=clinic, alert_id=created[0].alert_id), deps, 1)
                stored = await service.alerts.get(clinic, created[0].alert_id)
                assert stored.delivery["webhook"].state == "retrying"
                assert stored.delivery["webhook"].last_error == "the receiver answered HTTP 500"
                assert created[0].alert_id in {a.alert_id for a in await service.alerts.open_alerts(clinic)}
        asyncio.run(scenario())


def test_a_receiver_that_keeps_failing_is_dead_lettered_and_the_alert_stays_open(aws_server):
    clinic, patient = f"clinic-{uuid.uuid4().hex[:6]}", "patient-203"
    settings = aws_server
    with receiver([500]) as (url, received):
        async def scenario():
            clinics = directory(clinic, url)
            async with AsyncClients(settings) as clients, httpx.AsyncClient() as http:
                # a queue that gives up after 2 receives, as maxReceiveCount does in production after more
                queue_url, dlq_url = queues(settings, max_receive=2)
                service, created, _ = await raise_alerts(settings, clients, queue_url, clinics, clinic, patient)
                await clients.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)  # hidden for 30 s
                await SqsAlertQueue(clients.sqs, queue_url).send(AlertEvent(clinic_id=clinic, alert_id=created[0].alert_id))
                deps = DeliveryDeps(service.alerts, clinics, http, audit=AUDIT, retry=RetryPolicy(1, 1))
                log = await run_queue(clients.sqs, consumer_settings(settings, max_receive=2), queue_url, dlq_url,
                                      deps, clinic, created[0].alert_id)
                dead = await clients.sqs.receive_message(QueueUrl=dlq_url, WaitTimeSeconds=1,
                                                         MessageAttributeNames=["All"])
                return log, await service.alerts.get(clinic, created[0].alert_id), dead["Messages"]
        log, stored, dead = asyncio.run(scenario())
    # the states are sampled every 0.1 s: the second failure may be seen as "retrying:2" for a moment
    # before its dead-lettering is written; what counts is two attempts, then the dead letter
    assert log[0] == "retrying:1" and log[-1] == "dead_lettered:2", log
    assert set(log) <= {"retrying:1", "retrying:2", "dead_lettered:2"}, log
    assert len(received) == 2
    assert len(dead) == 1 and "the receiver answered HTTP 500" in dead[0]["MessageAttributes"]["schizodot_error"][
        "StringValue"]  # kept for an operator to read and redrive
    assert stored.state == "open"
    assert stored.delivery["webhook"].state == "dead_lettered"
    assert stored.delivery["webhook"].last_error == "the receiver answered HTTP 500"


def test_alerts_go_to_the_clinics_sns_topic_once(aws_server):
    clinic, patient = f"clinic-{uuid.uuid4().hex[:6]}", "patient-204"
    sns, sqs = sync_client(aws_server, "sns"), sync_client(aws_server, "sqs")
    topic = sns.create_topic(Name=f"alerts-{clinic}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"inbox-{clinic}")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "true"})

    async def scenario():
        clinics = directory(clinic, None, topic)
        async with AsyncClients(aws_server) as clients, httpx.AsyncClient() as http:
            async with get_session().create_client("sns", region_name=aws_server.aws_region,
                                                   endpoint_url=aws_server.aws_endpoint_url) as sns_client:
                service, created, _ = await raise_alerts(aws_server, clients, queues(aws_server)[0], clinics, clinic,
                                                         patient)
                deps = DeliveryDeps(service.alerts, clinics, http, audit=AUDIT, sns=sns_client)
                event = AlertEvent(clinic_id=clinic, alert_id=created[0].alert_id)
                assert await deliver_alert(event, deps) == {"sns": "delivered"}
                assert await deliver_alert(event, deps) == {"sns": "delivered"}  # redelivered: not sent again
    asyncio.run(scenario())
    messages = sqs.receive_message(QueueUrl=inbox, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                   MessageAttributeNames=["All"]).get("Messages", [])
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"])["data"]["patient_id"] == patient
    assert messages[0]["MessageAttributes"]["severity"]["StringValue"] == "high"


def test_the_sweep_raises_no_checkin_alerts_once(aws_server):
    from datetime import datetime, timezone
    clinic = f"clinic-{uuid.uuid4().hex[:6]}"

    async def scenario():
        async with AsyncClients(aws_server) as clients:
            clinics = directory(clinic, None)
            sent = []

            class Queue:
                async def send(self, event):
                    sent.append(event)
            service = alert_service(aws_server, clients, clinics, Queue(),
                                    clock=lambda: datetime(2026, 12, 20, tzinfo=timezone.utc))
            await service.roster.record_checkin(clinic, "patient-301", "job-000000000301", "2026-12-01T09:00:00Z")
            await service.roster.record_checkin(clinic, "patient-302", "job-000000000302", "2026-12-19T09:00:00Z")
            first = [a for a in await service.sweep() if a.clinic_id == clinic]
            second = [a for a in await service.sweep() if a.clinic_id == clinic]
            return first, second
    first, second = asyncio.run(scenario())
    assert [(a.patient_id, a.rule) for a in first] == [("patient-301", "no_checkin")] and second == []
    assert first[0].title == "No check-in for 18 days"
