"""CloudEvents 1.0 envelopes on SQS, and the typed data each queue carries.

Bodies are structured-mode JSON CloudEvents (id, source, type, specversion,
time, subject = job_id, data). Messages carry S3 references, never media.
"""

from __future__ import annotations

from typing import Any, TypeVar

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.domain import Filename, Metadata, PatientId
from shared.errors import MalformedMessage

CHECKIN_SUBMITTED = "org.schizodot.checkin.submitted.v1"  # upstream EHR -> ingest
ANALYSIS_REQUESTED = "org.schizodot.analysis.requested.v1"  # ingest -> audio, vision
MODALITY_ANALYSED = "org.schizodot.modality.analysed.v1"  # audio, vision -> fusion
FUSION_COMPLETED = "org.schizodot.fusion.completed.v1"  # fusion -> results

_FORMAT = JSONFormat()
Data = TypeVar("Data", bound=BaseModel)


class _EventData(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckinSubmitted(_EventData):
    """An EHR announces a check-in whose media is already in S3."""

    patient_id: PatientId
    s3_key: str = Field(min_length=1, max_length=1024)
    bucket: str | None = None  # defaults to the media bucket
    filename: Filename | None = None
    content_type: str | None = None
    metadata: Metadata = Field(default_factory=dict)


class AnalysisRequested(_EventData):
    job_id: str
    bucket: str
    s3_key: str
    media: dict[str, Any]


class ModalityAnalysed(_EventData):
    job_id: str
    modality: str
    artifact_key: str


class FusionCompleted(_EventData):
    job_id: str
    artifact_key: str


def encode_event(
    event_type: str,
    source: str,
    subject: str,
    data: BaseModel | dict[str, Any],
    *,
    event_id: str | None = None,
    content_type: str = "application/json",
    extensions: dict[str, str] | None = None,
) -> str:
    """A structured-mode JSON CloudEvent; `event_id` fixes the id (else a UUID4)."""
    attributes: dict[str, Any] = {
        "type": event_type, "source": source, "subject": subject, "datacontenttype": content_type,
        **(extensions or {}),
    }
    if event_id:
        attributes["id"] = event_id
    payload = data.model_dump(mode="json") if isinstance(data, BaseModel) else data
    return _FORMAT.write(CloudEvent(attributes, payload)).decode()


def decode_event(body: str) -> CloudEvent:
    try:
        event = _FORMAT.read(None, body)
    except (ValueError, TypeError, KeyError, BaseCloudEventException) as error:
        raise MalformedMessage(f"not a CloudEvents 1.0 JSON envelope: {error}") from error
    return event


def event_data(event: CloudEvent, model: type[Data], expected_type: str) -> Data:
    if event.get_type() != expected_type:
        raise MalformedMessage(f"unexpected event type '{event.get_type()}', expected '{expected_type}'")
    data = event.get_data()
    if not isinstance(data, dict):
        raise MalformedMessage("the event has no JSON object in 'data'")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise MalformedMessage(describe_validation_error(error)) from error


def describe_validation_error(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "data"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{field}: {message}")
    return "invalid event data: " + "; ".join(problems)
