"""Delivering an alert, once, to the clinic's webhook and/or SNS topic.

The alerts queue (`schizodot-alerts`, with its dead-letter queue; shared.runtime.topology
WORK_QUEUES) carries `AlertEvent`s as CloudEvents (`org.schizodot.alert.raised.v1`):
a clinic id and an alert id, no PHI. The results worker consumes it with the
consumer every stage uses (`AlertsHandler`); `deliver_alert` is a plain function of
one event it calls per message:

- every configured channel not yet delivered is tried; a success is recorded
  (`delivered`) and never repeated, so a redelivered message sends nothing twice;
- a failure (HTTP status outside 2xx, timeout, refused connection, SNS error)
  is recorded on the alert (`retrying`, attempts, last error) and raised as
  `DeliveryFailed` with a back-off delay: the consumer leaves the message
  invisible that long (`retry_after_seconds`) and SQS delivers it again; on the
  last allowed receive (`SCHIZODOT_MAX_RECEIVE_COUNT`) the handler records the
  alert as dead-lettered (`mark_dead_lettered`) and the consumer moves the message
  to the dead-letter queue, where an operator can redrive it. The alert stays open
  and visible in the console the whole time: delivery and acknowledgement are apart.

Webhooks follow the Standard Webhooks specification (standardwebhooks.com):
headers `webhook-id` (the alert id, stable across retries, so a receiver can
drop duplicates), `webhook-timestamp` (Unix seconds) and `webhook-signature`
(`v1,` + base64 HMAC-SHA256 over "id.timestamp.body" with the clinic's secret,
`whsec_...`). Receivers verify with any Standard Webhooks library and reject
timestamps older than a few minutes. The body names the patient (the clinic's
own system needs it to act) and links to the console; findings stay there.
Every send, webhook or SNS, each attempt, is audited first (`alert.sent`).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import httpx
import structlog
from pydantic import BaseModel, ConfigDict
from standardwebhooks import Webhook

from services.results.alerts.store import Alert, AlertStore, ChannelDelivery
from shared.domain.clinics import ClinicDirectory, WebhookTarget
from shared.identity.audit import AuditTrail
from shared.runtime.events import decode_event, encode_event, event_data
from shared.runtime.messaging import Accepted, Delivery

log = structlog.get_logger()

EVENT_TYPE = "alert.created"  # the webhook's and SNS message's type
ALERT_RAISED = "org.schizodot.alert.raised.v1"  # the alerts queue's CloudEvent type
USER_AGENT = "SchizoDot-Alerts/1"


class AlertEvent(BaseModel):
    """The alerts queue's message body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    clinic_id: str
    alert_id: str


def encode_alert_event(event: AlertEvent) -> str:
    return encode_event(ALERT_RAISED, "urn:schizodot:results", event.alert_id, event)


class DeliveryFailed(Exception):
    """At least one channel failed; retry after `retry_after_seconds` (SQS redelivers)."""

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with jitter: base * 2^(attempt-1), capped, times 0.5..1."""

    base_seconds: float = 10.0
    max_seconds: float = 900.0

    def delay(self, attempt: int) -> int:
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        return max(1, round(ceiling * random.uniform(0.5, 1.0)))


@dataclass
class DeliveryDeps:
    alerts: AlertStore
    clinics: ClinicDirectory
    http: httpx.AsyncClient
    sns: Any | None = None  # an SNS client (aiobotocore), when any clinic uses a topic
    console_url: str | None = None  # e.g. https://results.clinic.example/console
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    audit: AuditTrail | None = None  # every send is audited first (`alert.sent`); without a trail nothing is sent


def alert_document(alert: Alert, console_url: str | None) -> dict[str, Any]:
    link = f"{console_url.rstrip('/')}/patients/{alert.patient_id}#alert-{alert.alert_id}" if console_url else None
    return {
        "type": EVENT_TYPE,
        "timestamp": alert.created_at,
        "data": {"alert_id": alert.alert_id, "clinic_id": alert.clinic_id, "patient_id": alert.patient_id,
                 "rule": alert.rule, "severity": alert.severity, "title": alert.title, "summary": alert.summary,
                 "job_id": alert.job_id, "triggered_at": alert.triggered_at, "console_url": link},
    }


def signed_headers(secret: str, message_id: str, body: str, now: datetime | None = None) -> dict[str, str]:
    moment = now or datetime.now(timezone.utc)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(message_id, moment, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


async def _post_webhook(target: WebhookTarget, alert: Alert, deps: DeliveryDeps) -> None:
    body = json.dumps(alert_document(alert, deps.console_url), separators=(",", ":"))
    try:
        headers = signed_headers(target.secret(), alert.alert_id, body)
    except (OSError, ValueError) as error:
        raise _ChannelError(f"cannot sign: {error}") from error
    try:
        response = await deps.http.post(target.url, content=body.encode(), headers=headers,
                                        timeout=target.timeout_seconds, follow_redirects=False)
    except httpx.TimeoutException as error:
        raise _ChannelError(f"no answer within {target.timeout_seconds:g} s") from error
    except httpx.TransportError as error:
        raise _ChannelError(f"could not connect ({type(error).__name__})") from error
    if not 200 <= response.status_code < 300:
        raise _ChannelError(f"the receiver answered HTTP {response.status_code}")


async def _publish_sns(topic_arn: str, alert: Alert, deps: DeliveryDeps) -> None:
    if deps.sns is None:
        raise _ChannelError("no SNS client is configured")
    try:
        await deps.sns.publish(
            TopicArn=topic_arn, Message=json.dumps(alert_document(alert, deps.console_url)),
            MessageAttributes={"event_type": {"DataType": "String", "StringValue": EVENT_TYPE},
                               "severity": {"DataType": "String", "StringValue": alert.severity},
                               "rule": {"DataType": "String", "StringValue": alert.rule}})
    except Exception as error:  # botocore ClientError and connection errors alike
        code = (getattr(error, "response", None) or {}).get("Error", {}).get("Code")
        raise _ChannelError(f"SNS refused the message ({code or type(error).__name__})") from error


class _ChannelError(Exception):
    pass


async def _audit_send(alert: Alert, channel: str, attempt: int, deps: DeliveryDeps) -> None:
    """The alert names the patient and leaves the system: recorded before it goes, as results sent
    to the EHR are; a record that cannot be written stops the send (retried like a failed one)."""
    from shared.domain.patients import PatientKey

    if deps.audit is None:
        raise _ChannelError("no audit trail: alerts are not sent unaudited")
    try:
        await deps.audit.record_system("alert.sent", clinic_id=alert.clinic_id,
                                       stored_patient_key=PatientKey.of(alert.clinic_id, alert.patient_id),
                                       job_id=alert.job_id, detail={"alert_id": alert.alert_id, "channel": channel,
                                                                    "attempt": attempt, "rule": alert.rule})
    except Exception as error:  # AuditUnavailable
        raise _ChannelError(f"the audit trail is unavailable ({type(error).__name__})") from error


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def deliver_alert(event: AlertEvent, deps: DeliveryDeps, attempt: int = 1) -> dict[str, str]:
    """Send the alert on every channel not yet delivered; {channel: state}.

    `attempt` is the message's receive count (SQS ApproximateReceiveCount).
    Raises DeliveryFailed (with the back-off) when any channel failed.
    """
    alert = await deps.alerts.get(event.clinic_id, event.alert_id)
    if alert is None:
        log.info("alert to deliver no longer exists", alert_id=event.alert_id)
        return {}
    delivery = deps.clinics.get(alert.clinic_id).delivery
    states: dict[str, str] = {}
    failures: list[str] = []
    for channel in delivery.channels():
        previous = alert.delivery.get(channel) or ChannelDelivery()
        if previous.state == "delivered":
            states[channel] = "delivered"
            continue
        now = _now()
        try:
            await _audit_send(alert, channel, previous.attempts + 1, deps)
            if channel == "webhook":
                await _post_webhook(delivery.webhook, alert, deps)  # type: ignore[arg-type]
            else:
                await _publish_sns(delivery.sns_topic_arn, alert, deps)  # type: ignore[arg-type]
        except _ChannelError as error:
            record = ChannelDelivery(state="retrying", attempts=previous.attempts + 1, last_error=str(error),
                                     last_attempt_at=now)
            failures.append(f"{channel}: {error}")
        else:
            record = ChannelDelivery(state="delivered", attempts=previous.attempts + 1, last_attempt_at=now,
                                     delivered_at=now)
        await deps.alerts.record_delivery(alert.clinic_id, alert.alert_id, channel, record)
        states[channel] = record.state
    if failures:
        delay = deps.retry.delay(attempt)
        log.warning("alert delivery failed; SQS will retry", alert_id=alert.alert_id, attempt=attempt,
                    retry_after_seconds=delay, errors=failures)
        raise DeliveryFailed("; ".join(failures), delay)
    return states


async def mark_dead_lettered(event: AlertEvent, deps: DeliveryDeps) -> dict[str, str]:
    """The dead-letter queue's handler: the queue gave up; say so on the alert (it stays open)."""
    alert = await deps.alerts.get(event.clinic_id, event.alert_id)
    if alert is None:
        return {}
    states = {}
    for channel in deps.clinics.get(alert.clinic_id).delivery.channels():
        previous = alert.delivery.get(channel) or ChannelDelivery()
        if previous.state == "delivered":
            states[channel] = "delivered"
            continue
        await deps.alerts.record_delivery(alert.clinic_id, alert.alert_id, channel, previous.model_copy(
            update={"state": "dead_lettered"}))
        states[channel] = "dead_lettered"
    log.error("alert could not be delivered; it stays open in the console", alert_id=alert.alert_id,
              channels=states)
    return states


class AlertsHandler:
    """`shared.runtime.messaging.MessageHandler` for the alerts queue: deliver, or say when to try again;
    on the last allowed receive, record the alert as dead-lettered (the consumer then moves the
    message to the dead-letter queue)."""

    def __init__(self, deps: DeliveryDeps) -> None:
        self.deps = deps

    async def accept(self, delivery: Delivery) -> Accepted:
        # A message that is not an alert event raises MalformedMessage here: the consumer dead-letters it.
        event = event_data(decode_event(delivery.body), AlertEvent, ALERT_RAISED)

        async def work() -> None:
            try:
                await deliver_alert(event, self.deps, delivery.receive_count)
            except DeliveryFailed:
                if delivery.final_attempt:
                    await mark_dead_lettered(event, self.deps)
                raise

        return Accepted(work=work)
