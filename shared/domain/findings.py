"""The documents the stages hand each other, typed: what audio and vision found, what fusion
combined, and the SchizodotUsers item results writes from it.

    audio stage   -> artifacts/<job>/audio.json   AudioFindings
    vision stage  -> artifacts/<job>/vision.json  VisionFindings
    fusion        -> artifacts/<job>/fusion.json  FusionDocument (its `results` is the item's map)
    results       -> SchizodotUsers               ResultItem (shared/docs/DYNAMODB_SCHEMA.md, exactly)

Each is parsed once where it enters a stage (`parse_document`, a bad one fails the job in words
naming the document and the field) and written from the model (`stored()`).

The parts readers dig into (emotions, compliance, the fusion block, markers, answers, the
transcript, audio quality) are nested models; the long tail stays as extra fields, kept as they
came, as `shared.domain.job.Job` keeps attributes it does not know. A document dumps exactly as it was
given: fields it did not carry are not added (`Document`), numbers keep their type (`Number`), so
a stored item, an API response or a FHIR bundle built from one is byte for byte what it was
before these models existed.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, SerializationInfo, ValidationError, model_serializer

from shared.domain.errors import InputError

# An int stays an int and a float a float (pydantic's smart union keeps the exact type): a value
# read back from DynamoDB (shared.aws.dynamo turns 2.0 into 2) dumps as it was read.
Number = int | float


class Document(BaseModel):
    """A typed view of a JSON document that dumps as it came: set fields and extras, nothing added."""

    model_config = ConfigDict(extra="allow")

    @model_serializer(mode="wrap")
    def _as_given(self, handler: Any, info: SerializationInfo):  # no return type: the schema stays the fields'
        data = handler(self)
        if not isinstance(data, dict):
            return data
        declared = type(self).model_fields
        given = self.model_fields_set
        return {key: value for key, value in data.items() if key not in declared or key in given}

    def stored(self) -> dict[str, Any]:
        """The document as plain values, exactly the fields it carries, each as it was given."""
        return self.model_dump()


# --- the blocks readers dig into --------------------------------------------------------------


class EmotionScore(Document):
    emotion: str
    confidence: Number


class Emotion(Document):
    """A speech (`audio_emotion`) or facial (`facial_emotion`) emotion reading, or why there is none."""

    assessed: bool | None = None
    primary_emotion: str | None = None
    confidence: Number | None = None
    all_emotions: list[EmotionScore] | None = None
    method: str | None = None
    validation: dict[str, Any] | None = None
    reason: str | None = None
    note: str | None = None
    face_detected: bool | None = None  # vision only
    frame_count: int | None = None  # vision only


class SelfReport(Document):
    """What the patient said about the medication (audio's `self_report`): never observed intake."""

    classification: str | None = None
    words: list[str] | None = None
    method: str | None = None
    assessed: bool | None = None
    observed: bool | None = None
    reason: str | None = None


class DosingStep(Document):
    """One dosing step of the intake check (vision's `compliance.steps`)."""

    step: str | None = None
    observed: bool | None = None  # None: could not be assessed (note says why)
    first_seen_s: Number | None = None
    confidence: Number | None = None
    note: str | None = None


class PillDetector(Document):
    configured: bool | None = None
    model: str | None = None


class Compliance(Document):
    """Observed intake (vision's `compliance`); fusion adds what the patient said (`self_report`)."""

    verification_status: str | None = None
    compliance_score: Number | None = None
    assessed: bool | None = None
    reason: str | None = None
    pill_detector: PillDetector | None = None
    self_report: SelfReport | None = None
    steps: list[DosingStep] | None = None


class Word(Document):
    word: str
    start: Number
    end: Number


class Segment(Document):
    start: Number
    end: Number
    text: str
    words: list[Word] | None = None


class Transcript(Document):
    enabled: bool | None = None
    text: str | None = None
    segments: list[Segment] | None = None
    model: str | None = None
    reason: str | None = None
    language: str | None = None


class RecordingSource(Document):
    """How the sound was recorded (ffprobe of the original track), for the quality gate."""

    sample_rate_hz: int | None = None
    channels: int | None = None
    codec: str | None = None
    device: str | None = None
    encoder: str | None = None


class AudioQuality(Document):
    source: RecordingSource | None = None
    voiced_seconds: Number | None = None
    snr_db: Number | None = None
    clipped_fraction: Number | None = None


class Answer(Document):
    step_id: str | None = None
    start_s: Number | None = None
    end_s: Number | None = None
    clipped: bool | None = None
    markers: dict[str, dict[str, Any]] | None = None  # name -> shared.domain.markers.Marker as a dict


class Answers(Document):
    """The markers of each spoken answer, by prompt (audio's `answers`)."""

    assessed: bool | None = None
    reason: str | None = None
    method: str | None = None
    flags: list[str] | None = None
    items: list[Answer] | None = None


Markers = dict[str, dict[str, Any]]  # marker name -> shared.domain.markers.Marker as a dict (validated there)


class TranscriptFlag(Document):
    """A statement flagged in the transcript (services/fusion/transcript_flags.py)."""

    category: str
    phrase: str
    start: Number | None = None
    end: Number | None = None


class BaselineReport(Document):
    """This check-in against the patient's own earlier ones (services/fusion/baseline.py)."""

    available: bool | None = None
    checkins_compared: int | None = None
    changes: list[str] | None = None
    reason: str | None = None


class Adherence(Document):
    status: str
    reason: str | None = None


class MultimodalFusion(Document):
    """Fusion's combined reading: the overall emotion, adherence and the risk level with its factors."""

    risk_level: str
    overall_emotion: str | None = None
    emotional_consistency: str | None = None
    confidence: Number | None = None
    risk_factors: list[str] | None = None
    adherence: Adherence | None = None
    modalities_not_assessed: dict[str, str] | None = None
    transcript_flags: list[TranscriptFlag] | None = None
    baseline: BaselineReport | None = None


class ClinicalSummary(Document):
    emotional_state: str | None = None
    medication_adherence: str | None = None
    risk_assessment: str | None = None
    recommendations: list[str] | None = None
    generated_by: str | None = None
    timestamp: str | None = None


# --- the stage documents ----------------------------------------------------------------------


class _ModalityFindings(Document):
    job_id: str
    analysed_at: str
    compute_seconds: Number | None = None
    duration_seconds: Number | None = None
    models: dict[str, Any] | None = None


class AudioFindings(_ModalityFindings):
    """The audio stage's artifact (services/audio)."""

    modality: Literal["audio"] = "audio"
    speech_detected: bool | None = None
    audio_emotion: Emotion | None = None
    vocal_markers: Markers | None = None
    answers: Answers | None = None
    transcript: Transcript | None = None
    audio_quality: AudioQuality | None = None
    self_report: SelfReport | None = None


class VisionFindings(_ModalityFindings):
    """The vision stage's artifact (services/vision)."""

    modality: Literal["vision"] = "vision"
    facial_emotion: Emotion | None = None
    video_markers: Markers | None = None
    compliance: Compliance | None = None
    frames_analysed: int | None = None


class OptionsReport(Document):
    """What the check-in asked for and what applied (fusion's `results.options`)."""

    analyses_requested: list[str] | None = None
    modalities_analysed: list[str] | None = None
    thresholds: dict[str, Number | None] | None = None
    thresholds_set_on_checkin: dict[str, Number | None] | None = None


class Results(Document):
    """The `results` map of a SchizodotUsers item (the seed's five blocks, then what fusion adds)."""

    audio_emotion: Emotion
    facial_emotion: Emotion
    compliance: Compliance
    multimodal_fusion: MultimodalFusion
    clinical_summary: ClinicalSummary
    vocal_markers: Markers | None = None
    video_markers: Markers | None = None
    answers: Answers | None = None
    transcript: Transcript | None = None
    audio_quality: AudioQuality | None = None
    options: OptionsReport | None = None


class FusionDocument(Document):
    """Fusion's artifact: the job's combined findings, which results saves as they are."""

    job_id: str
    analysed_at: str
    compute_seconds: Number | None = None
    results: Results


class ResultItem(Document):
    """A SchizodotUsers item (access pattern 6), in the seed's shape (shared/docs/DYNAMODB_SCHEMA.md).

    As stored, `user_id` is the patient key (clinic.patient), where the item's clinic is kept; the
    APIs show the clinic's own patient id there, with its clinic as `clinic_id`."""

    user_id: str
    timestamp: str
    job_id: str
    s3_key: str
    analysis_type: str
    analyzed_at: str
    processing_time_seconds: float | None = None
    status: str
    results: Results

    @property
    def clinic_id(self) -> str | None:
        """The item's clinic: its key's, or (an item from before keys named it, or one as shown) its
        `clinic_id` attribute."""
        from shared.domain.patients import PatientKey  # the key is the one place the clinic is stored

        extra = self.model_extra.get("clinic_id") if self.model_extra else None
        return PatientKey.parse(self.user_id).clinic_id or (extra if isinstance(extra, str) else None)


class PartialResults(Document):
    """Some blocks of a stored item's `results` map, as a read that names them returns them
    (shared.aws.history `latest_projected`), or this check-in's in the same shape: each optional."""

    vocal_markers: Markers | None = None
    video_markers: Markers | None = None
    answers: Answers | None = None
    audio_quality: AudioQuality | None = None
    compliance: Compliance | None = None
    multimodal_fusion: MultimodalFusion | None = None


class PartialResultItem(Document):
    """A patient's earlier SchizodotUsers item read with a projection: its key, its job and the parts of
    `results` asked for (None when it holds none of them). A whole item parses as `ResultItem`."""

    user_id: str
    timestamp: str
    job_id: str
    results: PartialResults | None = None


DocumentT = TypeVar("DocumentT", bound=Document)


def parse_document(model: type[DocumentT], document: object, what: str) -> DocumentT:
    """`document` as `model`; an InputError naming `what` and each field that is wrong when it is not.

    A stage's input that does not parse cannot be analysed by retrying, so the job fails at once
    with this message (shared.domain.errors) and the document stays where it is for a person to read."""
    try:
        return model.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}"
                             for e in error.errors()[:5])
        more = f" (and {error.error_count() - 5} more)" if error.error_count() > 5 else ""
        raise InputError(f"{what} is not a valid {model.__name__}: {problems}{more}") from None


__all__ = ["Adherence", "Answer", "Answers", "AudioFindings", "AudioQuality", "ClinicalSummary", "Compliance", "Document",
           "Emotion", "EmotionScore", "FusionDocument", "Markers", "MultimodalFusion", "Number", "PartialResultItem",
           "PartialResults", "PillDetector", "DocumentT", "ResultItem", "Results", "Transcript", "VisionFindings", "parse_document"]
