"""Alerts raised, queued on a real SQS queue (moto's server) with its dead-letter
queue, delivered to a real HTTP receiver that verifies the Standard Webhooks
signature, and to SNS. The small loop here stands for the stage runner: it
receives, calls the handler, and on DeliveryFailed keeps the message invisible
for the back-off the handler asks for, so SQS redelivers it."""

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

from services.results.alerts.clinics import AlertDelivery, ClinicDirectory, ClinicProfile, WebhookTarget
from services.results.alerts.delivery import (
    AlertEvent,
    DeliveryDeps,
    DeliveryFailed,
    RetryPolicy,
    deliver_alert,
    mark_dead_lettered,
)
from services.results.alerts.infra import ALERTS_QUEUE
from services.results.alerts.roster import DynamoRoster
from services.results.alerts.service import AlertService, SqsAlertQueue
from services.results.alerts.store import DynamoAlertStore
from shared.aws import AsyncClients, sync_client
from tests.browser.contract_items import history
from tests.conftest import free_port

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


async def run_queue(sqs, queue_url: str, dlq_url: str, deps: DeliveryDeps, max_seconds: float = 40) -> list[str]:
    """Stands for the stage runner on the alerts queue and its DLQ; returns what happened, in order."""
    log: list[str] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    while loop.time() < deadline:
        got = await sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1, WaitTimeSeconds=1,
                                        AttributeNames=["ApproximateReceiveCount"])
        for message in got.get("Messages", []):
            attempt = int(message["Attributes"]["ApproximateReceiveCount"])
            try:
                await deliver_alert(AlertEvent.model_validate_json(message["Body"]), deps, attempt)
            except DeliveryFailed as failure:
                log.append(f"retry after {failure.retry_after_seconds}s: {failure}")
                await sqs.change_message_visibility(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"],
                                                    VisibilityTimeout=failure.retry_after_seconds)
            else:
                log.append("delivered")
                await sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
                return log
        dead = await sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=1, WaitTimeSeconds=0)
        for message in dead.get("Messages", []):
            await mark_dead_lettered(AlertEvent.model_validate_json(message["Body"]), deps)
            await sqs.delete_message(QueueUrl=dlq_url, ReceiptHandle=message["ReceiptHandle"])
            log.append("dead-lettered")
            return log
    raise AssertionError(f"nothing final within {max_seconds} s: {log}")


def queues(settings, max_receive: int = 5):
    """A fresh alerts queue and DLQ for one test, as ensure_alert_resources makes them."""
    sqs = sync_client(settings, "sqs")
    name = f"{settings.queue_name(ALERTS_QUEUE)}-{uuid.uuid4().hex[:8]}"
    dlq = sqs.create_queue(QueueName=name + "-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    url = sqs.create_queue(QueueName=name, Attributes={"VisibilityTimeout": "30", "RedrivePolicy": json.dumps(
        {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receive)})})["QueueUrl"]
    return url, dlq


def high_risk_history(patient: str, clinic: str):
    return history(patient, clinic, 4, risks=["low", "low", "low", "high"])


async def raise_alerts(clients, queue_url, clinics, clinic, patient):
    service = AlertService(DynamoAlertStore(clients.dynamodb), DynamoRoster(clients.dynamodb), clinics,
                           SqsAlertQueue(clients.sqs, queue_url))
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
                service, created, again = await raise_alerts(clients, raised_on, clinics, clinic, patient)
                assert [a.rule for a in created] == ["risk", "baseline_decline"] and again == []
                queued = (await clients.sqs.receive_message(QueueUrl=raised_on, MaxNumberOfMessages=10))["Messages"]
                # queued again by the repeat, since its delivery had not started (a crash between store and
                # queue loses nothing); delivery is recorded per channel, so nothing is sent twice
                assert {json.loads(m["Body"])["alert_id"] for m in queued} == {a.alert_id for a in created}
                assert all(set(json.loads(m["Body"])) == {"clinic_id", "alert_id"} for m in queued)  # no PHI queued
                # the risk alert's message meets the failing receiver
                queue_url, dlq_url = queues(aws_server)
                deps = DeliveryDeps(service.alerts, clinics, http, console_url="https://results.example/console",
                                    retry=RetryPolicy(base_seconds=1, max_seconds=1))
                risk = next(a for a in created if a.rule == "risk")
                await SqsAlertQueue(clients.sqs, queue_url).send(AlertEvent(clinic_id=clinic, alert_id=risk.alert_id))
                log = await run_queue(clients.sqs, queue_url, dlq_url, deps)
                return risk, log, await service.alerts.get(clinic, risk.alert_id), service
        risk, log, stored, service = asyncio.run(scenario())
    assert log[:2] == ["retry after 1s: webhook: the receiver answered HTTP 500"] * 2 and log[2] == "delivered"
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
    with pytest.raises(Exception):
        Webhook("whsec_" + base64.b64encode(b"another-clinics-secret-012345678").decode()).verify(
            received[0]["body"], received[0]["headers"])


def test_a_failing_delivery_is_visible_on_the_alert_while_it_retries(aws_server):
    clinic, patient = f"clinic-{uuid.uuid4().hex[:6]}", "patient-202"
    with receiver([500]) as (url, received):
        async def scenario():
            clinics = directory(clinic, url)
            async with AsyncClients(aws_server) as clients, httpx.AsyncClient() as http:
                service, created, _ = await raise_alerts(clients, queues(aws_server)[0], clinics, clinic, patient)
                deps = DeliveryDeps(service.alerts, clinics, http, retry=RetryPolicy(base_seconds=1, max_seconds=1))
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
                service, created, _ = await raise_alerts(clients, queue_url, clinics, clinic, patient)
                await clients.sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)  # hidden for 30 s
                await SqsAlertQueue(clients.sqs, queue_url).send(AlertEvent(clinic_id=clinic, alert_id=created[0].alert_id))
                deps = DeliveryDeps(service.alerts, clinics, http, retry=RetryPolicy(1, 1))
                log = await run_queue(clients.sqs, queue_url, dlq_url, deps)
                return log, await service.alerts.get(clinic, created[0].alert_id), service
        log, stored, service = asyncio.run(scenario())
    assert log == ["retry after 1s: webhook: the receiver answered HTTP 500"] * 2 + ["dead-lettered"]
    assert len(received) == 2
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
                service, created, _ = await raise_alerts(clients, queues(aws_server)[0], clinics, clinic, patient)
                deps = DeliveryDeps(service.alerts, clinics, http, sns=sns_client)
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
            service = AlertService(DynamoAlertStore(clients.dynamodb), DynamoRoster(clients.dynamodb), clinics,
                                   Queue(), clock=lambda: datetime(2026, 12, 20, tzinfo=timezone.utc))
            await service.roster.record_checkin(clinic, "patient-301", "job-000000000301", "2026-12-01T09:00:00Z")
            await service.roster.record_checkin(clinic, "patient-302", "job-000000000302", "2026-12-19T09:00:00Z")
            first = [a for a in await service.sweep() if a.clinic_id == clinic]
            second = [a for a in await service.sweep() if a.clinic_id == clinic]
            return first, second
    first, second = asyncio.run(scenario())
    assert [(a.patient_id, a.rule) for a in first] == [("patient-301", "no_checkin")] and second == []
    assert first[0].title == "No check-in for 18 days"
