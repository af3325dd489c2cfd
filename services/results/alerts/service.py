"""What the results service calls: a new result, the daily sweep, an acknowledgement.

`on_result` is called once per stored result (redelivery is safe: alerts are
stored once by id, and an alert whose delivery never started is queued again).
It records the check-in on the clinic's roster and, at the same time, stores and queues every
alert the clinic's rules raise. `sweep` raises "no check-in for N days" alerts
for every clinic; the results worker runs it every `RESULTS_ALERT_SWEEP_INTERVAL_SECONDS`
(every replica may: an alert is stored once by its id). `acknowledge` closes an alert
with the clinician's note; the console audits it first (shared.identity.audit).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timezone
from typing import Any, Protocol, TypeVar

from services.results.alerts.delivery import AlertEvent, encode_alert_event
from services.results.alerts.roster import Roster
from services.results.alerts.rules import AlertDraft, evaluate, missed_checkins
from services.results.alerts.store import Alert, AlertStore, alert_id_for
from shared.domain.clinics import ClinicDirectory
from shared.domain.findings import PartialResultItem, ResultItem

NOTE_MAX = 2000
T = TypeVar("T")


class AlertQueue(Protocol):
    async def send(self, event: AlertEvent) -> None: ...


class SqsAlertQueue:
    """The alerts queue, by URL or by name (its URL looked up on first use)."""

    def __init__(self, sqs: Any, queue: str) -> None:
        self._sqs = sqs
        self._url = queue if queue.startswith(("https://", "http://")) else None
        self._name = queue

    async def send(self, event: AlertEvent) -> None:
        if self._url is None:
            self._url = (await self._sqs.get_queue_url(QueueName=self._name))["QueueUrl"]
        await self._sqs.send_message(QueueUrl=self._url, MessageBody=encode_alert_event(event))


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


class AlertService:
    def __init__(self, alerts: AlertStore, roster: Roster, clinics: ClinicDirectory, queue: AlertQueue,
                 clock: Callable[[], datetime] = _utc_now) -> None:
        self.alerts = alerts
        self.roster = roster
        self.clinics = clinics
        self.queue = queue
        self._clock = clock

    async def on_result(self, clinic_id: str, item: ResultItem, earlier: Sequence[ResultItem | PartialResultItem]
                        ) -> list[Alert]:
        """`item`: the SchizodotUsers item just stored; `earlier`: the patient's results before it, newest first.
        The roster's row and the alerts depend on nothing of each other: both are written at once."""
        _, raised = await _all(self.roster.record_checkin(clinic_id, item.patient, item.job_id, item.timestamp),
                               self.on_review(clinic_id, item, earlier))
        return raised

    async def on_review(self, clinic_id: str, item: ResultItem, earlier: Sequence[ResultItem | PartialResultItem]
                        ) -> list[Alert]:
        """A reviewer's verdict changed a stored result: its rules run again (an alert already raised is
        stored once by id, so only what the verdict newly makes true is raised); the roster is left as is.
        (`on_result` runs the rules through here after recording the check-in.)"""
        drafts = evaluate(item, [e for e in earlier if e.job_id != item.job_id], self.clinics.get(clinic_id).alerts)
        return await self._raise(clinic_id, drafts)

    async def sweep(self) -> list[Alert]:
        raised: list[Alert] = []
        now = self._clock()
        for clinic_id in await self.roster.clinics():
            drafts = missed_checkins(await self.roster.patients(clinic_id), self.clinics.get(clinic_id).alerts, now)
            raised += await self._raise(clinic_id, drafts)
        return raised

    async def acknowledge(self, clinic_id: str, alert_id: str, by: str, note: str) -> Alert | None:
        """None for an unknown alert (or another clinic's); AlreadyAcknowledged when someone was first."""
        return await self.alerts.acknowledge(clinic_id, alert_id, by, note.strip()[:NOTE_MAX],
                                             self._clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))

    async def _raise(self, clinic_id: str, drafts: list[AlertDraft]) -> list[Alert]:
        """Each draft stored once by its id and queued (drafts are different alerts: written at once)."""
        channels = self.clinics.get(clinic_id).delivery.channels()
        created = await _all(*(self._raise_one(clinic_id, draft, channels) for draft in drafts))
        return [alert for alert in created if alert is not None]

    async def _raise_one(self, clinic_id: str, draft: AlertDraft, channels: Sequence[str]) -> Alert | None:
        """The alert stored and queued; None when it was stored before (queued again only if a crash came between)."""
        alert = Alert(
            clinic_id=clinic_id, alert_id=alert_id_for(clinic_id, draft.patient_id, draft.rule, draft.trigger,
                                                       draft.triggered_at),
            patient_id=draft.patient_id, rule=draft.rule, severity=draft.severity, title=draft.title,
            summary=draft.summary, evidence=draft.evidence, job_id=draft.job_id, triggered_at=draft.triggered_at,
            created_at=self._clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        )
        created: Alert | None = alert
        if not await self.alerts.put_new(alert):
            created = None
            stored = await self.alerts.get(clinic_id, alert.alert_id)
            if stored is None or any(stored.delivery.get(c) for c in channels):
                return None  # delivery has started: the queue owns it
            alert = stored  # stored, but the crash came before it was queued
        if channels:
            await self.queue.send(AlertEvent(clinic_id=clinic_id, alert_id=alert.alert_id))
        return created


async def _all(*steps: Awaitable[T]) -> list[T]:
    """Run `steps` at once, let every one finish, and raise the first failure as it is (a retry redoes them all:
    each is idempotent)."""
    outcomes = await asyncio.gather(*steps, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return list(outcomes)
