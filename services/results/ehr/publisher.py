"""Results out to the EHR: one CloudEvent per completed job, carrying the FHIR bundle.

The event goes to an SQS queue (`RESULTS_EHR_QUEUE_URL`) and/or an SNS topic
(`RESULTS_EHR_TOPIC_ARN`); with neither set, nothing is sent. It is sent before
the job is marked completed, so a crash in between re-sends it: delivery is at
least once, and the event id is derived from the job id so the EHR can drop repeats.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog

from shared.runtime.blocking import run_blocking
from shared.runtime.events import encode_event
from shared.runtime.tracing import inject_message_attributes

log = structlog.get_logger()

RESULTS_AVAILABLE = "org.schizodot.results.available.v1"  # results -> EHR
FHIR_CONTENT_TYPE = "application/fhir+json"


def event_id(job_id: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:schizodot:results-available:{job_id}"))


def encode_results_event(job_id: str, bundle: dict[str, Any], source: str, fhir_version: str) -> str:
    """Structured-mode JSON CloudEvent; `data` is the FHIR Bundle itself."""
    return encode_event(
        RESULTS_AVAILABLE, source, job_id, bundle, event_id=event_id(job_id), content_type=FHIR_CONTENT_TYPE,
        extensions={"dataschema": "http://hl7.org/fhir/R4/bundle.html", "fhirversion": fhir_version},
    )


class EhrPublisher:
    """Sends the event to the configured queue and/or topic."""

    def __init__(self, sqs: Any, sns: Any | None, queue_url: str | None, topic_arn: str | None,
                 source: str = "urn:schizodot:results") -> None:
        self._sqs = sqs
        self._sns = sns  # a boto3 (sync) client, used off the event loop
        self._queue_url = queue_url
        self._topic_arn = topic_arn
        self.source = source

    @property
    def enabled(self) -> bool:
        return bool(self._queue_url or self._topic_arn)

    async def publish(self, job_id: str, body: str) -> None:
        attributes = inject_message_attributes()
        if self._queue_url:
            sent = await self._sqs.send_message(QueueUrl=self._queue_url, MessageBody=body,
                                                MessageAttributes=attributes)
            log.info("results event sent to the EHR queue", message_id=sent["MessageId"])
        if self._topic_arn:
            sent = await run_blocking(None, lambda: self._sns.publish(
                TopicArn=self._topic_arn, Message=body, MessageAttributes=attributes))
            log.info("results event published to the EHR topic", message_id=sent["MessageId"])
