"""CloudEvents 1.0 envelopes on SQS, and the typed data each queue carries.

Bodies are structured-mode JSON CloudEvents (id, source, type, specversion,
time, subject = job_id, data). Messages carry S3 references, never media.
A body is parsed once, at the edge (`decode_event`), into a typed event.

Between stages an event names the job and nothing the job record already
holds: where the artifacts are is read from the job (`shared.domain.job`). Fields an
older sender still sends are ignored, so a rolling deploy loses no message;
the public `CheckinSubmitted` refuses unknown fields instead.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, ClassVar, TypeVar

from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from shared.domain.checkin import Filename, Metadata, PatientId
from shared.domain.errors import MalformedMessage
from shared.domain.options import CheckinOptions
from shared.domain.timeline import TimelineField
from shared.identity.principal import CLINIC_ID_PATTERN

CHECKIN_SUBMITTED = "org.schizodot.checkin.submitted.v1"  # upstream EHR -> ingest
ANALYSIS_REQUESTED = "org.schizodot.analysis.requested.v1"  # ingest -> audio, vision
MODALITY_ANALYSED = "org.schizodot.modality.analysed.v1"  # audio, vision -> fusion
FUSION_COMPLETED = "org.schizodot.fusion.completed.v1"  # fusion -> results

# The CloudEvents distributed-tracing extension: a sender's trace context in the envelope.
TRACING_EXTENSION = ("traceparent", "tracestate")

_FORMAT = JSONFormat()
ClinicId = Annotated[str, StringConstraints(pattern=CLINIC_ID_PATTERN)]
Data = TypeVar("Data", bound=BaseModel)


class CheckinSubmitted(BaseModel):
    """An EHR announces a check-in whose media is already in S3."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str] = CHECKIN_SUBMITTED

    clinic_id: ClinicId  # must be the sender's clinic (the ingest API checks it against the credential)
    patient_id: PatientId  # clinic-local
    s3_key: str = Field(min_length=1, max_length=1024)  # under incoming/<clinic_id>/ of the media bucket
    bucket: str | None = None  # defaults to the media bucket
    filename: Filename | None = None
    content_type: str | None = None
    metadata: Metadata = Field(default_factory=dict)
    options: CheckinOptions = Field(default_factory=CheckinOptions)  # analyses and thresholds (shared.domain.options)
    timeline: TimelineField | None = None  # when each prompt and dosing step was shown (shared.domain.timeline)


class StageEvent(BaseModel):
    """What one stage tells the next about a job."""

    model_config = ConfigDict(extra="ignore", frozen=True)
    TYPE: ClassVar[str]

    job_id: str


class AnalysisRequested(StageEvent):
    """Analyse the job's media. Only the job id travels: where the media is (its key names the
    patient) is read from the job, so no queue holds a patient key (issue 19, finding 5). A message
    of the earlier shape (with `bucket` and `s3_key`) still parses; those fields are ignored."""

    TYPE: ClassVar[str] = ANALYSIS_REQUESTED


class ModalityAnalysed(StageEvent):
    """One modality's findings are stored; fusion runs once every expected one is."""

    TYPE: ClassVar[str] = MODALITY_ANALYSED
    modality: str


class FusionCompleted(StageEvent):
    """The job's findings document is stored; results saves and completes the job."""

    TYPE: ClassVar[str] = FUSION_COMPLETED


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


def parse_json(body: str) -> Any:
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
        raise MalformedMessage(f"the message body is not JSON: {error}") from error


def decode_event(body: str | Mapping[str, Any]) -> CloudEvent:
    """The CloudEvent in a message body, or in that body already parsed as JSON."""
    envelope = parse_json(body) if isinstance(body, str) else body
    if not isinstance(envelope, Mapping):
        raise MalformedMessage("not a CloudEvents 1.0 JSON envelope: the body is not a JSON object")
    attributes = dict(envelope)
    data = attributes.pop("data", None)
    try:
        if data is None and "data_base64" in attributes:
            data = base64.b64decode(attributes.pop("data_base64"))
        if "time" in attributes:
            attributes["time"] = datetime.fromisoformat(attributes["time"])
        return CloudEvent(attributes, data)  # the library validates the attributes
    except (ValueError, TypeError, KeyError, BaseCloudEventException) as error:
        raise MalformedMessage(f"not a CloudEvents 1.0 JSON envelope: {error}") from error


def tracing_carrier(event: CloudEvent) -> dict[str, str]:
    """The trace context the sender put in the envelope (CloudEvents distributed tracing)."""
    attributes = event.get_attributes()
    return {key: attributes[key] for key in TRACING_EXTENSION if isinstance(attributes.get(key), str)}


def event_data(event: CloudEvent, model: type[Data], expected_type: str | None = None) -> Data:
    expected_type = expected_type or getattr(model, "TYPE")
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
