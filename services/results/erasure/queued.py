"""The queues that can hold a patient's data (the ingest queue, the dead-letter queues) and how an
erasure finds the patient's messages there (step 4 of handler.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote_plus

from shared.domain.checkin import job_id_from_upload_key
from shared.domain.patients import PatientKey
from shared.runtime.infra import UPLOAD_PREFIX


class QueuedMessages(Protocol):
    """The queues that can hold a patient's data (the ingest queue, the dead-letter queues)."""

    async def remove(self, matches: Callable[[str], bool]) -> int:
        """Delete every message whose body `matches`, release every other at once; how many were deleted."""


@dataclass
class SqsQueuedMessages:
    """`QueuedMessages` on SQS. Each queue is read through (long poll, so no server is skipped); a
    message that is not the patient's is held only while the queue is read, then released at once
    (visibility 0). One read raises a message's receive count by one, as a worker's look would."""

    sqs: Any
    queue_urls: tuple[str, ...]
    hold_seconds: int = 120

    async def remove(self, matches: Callable[[str], bool]) -> int:
        return sum(await asyncio.gather(*(self._remove(url, matches) for url in self.queue_urls)))

    async def _remove(self, url: str, matches: Callable[[str], bool]) -> int:
        removed, held = 0, []
        try:
            while True:
                response = await self.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                                          VisibilityTimeout=self.hold_seconds)
                messages = response.get("Messages", [])
                if not messages:
                    return removed
                for message in messages:
                    if matches(message.get("Body", "")):
                        await self.sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
                        removed += 1
                    else:
                        held.append(message["ReceiptHandle"])
        finally:
            for start in range(0, len(held), 10):
                await self.sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
                    {"Id": str(n), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                    for n, handle in enumerate(held[start:start + 10])])


class MemoryQueuedMessages:
    """`QueuedMessages` in memory: {queue name: [bodies]}."""

    def __init__(self, queues: dict[str, list[str]] | None = None) -> None:
        self.queues = queues if queues is not None else {}

    async def remove(self, matches: Callable[[str], bool]) -> int:
        removed = 0
        for name, bodies in self.queues.items():
            kept = [body for body in bodies if not matches(body)]
            removed += len(bodies) - len(kept)
            self.queues[name] = kept
        return removed


def names_patient(body: str, clinic_id: str, patient_id: str, job_ids: Iterable[str]) -> bool:
    """Whether a queued message is of this patient: an S3 notification for one of their uploads or
    jobs, an event naming them (an EHR's check-in) or one of their jobs, or, unreadable, one that
    holds both their clinic and their id."""
    key, jobs = PatientKey.of(clinic_id, patient_id), set(job_ids)
    uploads = f"{UPLOAD_PREFIX}{key}/"
    try:
        message = json.loads(body)
    except (ValueError, TypeError):
        return f'"{patient_id}"' in body and clinic_id in body
    if not isinstance(message, dict):
        return False
    if isinstance(message.get("Records"), list):  # S3's notification
        for record in message["Records"]:
            s3 = record.get("s3") if isinstance(record, dict) else None
            stored = unquote_plus(str(((s3 or {}).get("object") or {}).get("key", "")))
            if stored.startswith(uploads) or job_id_from_upload_key(stored) in jobs:
                return True
        return False
    data = message.get("data")
    if not isinstance(data, dict):
        return False
    return ((data.get("clinic_id"), data.get("patient_id")) == (clinic_id, patient_id)
            or data.get("job_id") in jobs or str(data.get("s3_key") or "").startswith(uploads))
