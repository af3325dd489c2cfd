"""The documents the stages hand each other, typed: what audio and vision found, what fusion
combined, and the SchizodotUsers item results writes from it.

    audio stage   -> artifacts/<job>/audio.json   AudioFindings
    vision stage  -> artifacts/<job>/vision.json  VisionFindings
    fusion        -> artifacts/<job>/fusion.json  FusionDocument (its `results` is the item's map)
    results       -> SchizodotUsers               ResultItem (shared/docs/DYNAMODB_SCHEMA.md, exactly)

Each is parsed once where it enters a stage (`parse_document`, a bad one fails the job in words
naming the document and the field) and written from the model (`stored()`).

The parts readers dig into (emotions, compliance, the fusion block, markers, answers, the
transcript, audio quality) are nested models (shared.domain.finding_blocks, re-exported here);
the long tail stays as extra fields, kept as they came, as `shared.domain.job.Job` keeps
attributes it does not know. A document dumps exactly as it was given: fields it did not carry
are not added (`Document`), numbers keep their type (`Number`), so a stored item, an API
response or a FHIR bundle built from one is byte for byte what it was
before these models existed.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import ValidationError

from shared.domain.errors import InputError
from shared.domain.finding_blocks import (
    Adherence,
    Answer,
    Answers,
    AnswerTranscript,
    AudioQuality,
    BaselineReport,
    ClinicalSummary,
    Compliance,
    Document,
    DosingStep,
    DosingVerdict,
    Emotion,
    EmotionMoment,
    EmotionScore,
    EvidenceFrame,
    Expressivity,
    MarkerBaseline,
    Markers,
    MarkerValue,
    MultimodalFusion,
    Number,
    OptionsReport,
    PillDetector,
    RecordingSource,
    ReviewClip,
    RiskEvidence,
    Segment,
    SelfReport,
    StoredMarkers,
    SummaryFlag,
    Transcript,
    TranscriptFlag,
    TranscriptScreen,
    Word,
)
from shared.domain.patients import ClinicPatientId, PatientKey

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

class Results(Document):
    """The `results` map of a SchizodotUsers item (the seed's five blocks, then what fusion adds)."""

    audio_emotion: Emotion
    facial_emotion: Emotion
    compliance: Compliance
    multimodal_fusion: MultimodalFusion
    clinical_summary: ClinicalSummary
    vocal_markers: StoredMarkers | None = None
    video_markers: StoredMarkers | None = None
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
    APIs show the clinic's own patient id there, with its clinic as `clinic_id` (`shown`). Readers
    take it parsed once (`shared.domain.stored_results.stored_result`)."""

    user_id: str
    timestamp: str
    job_id: str
    s3_key: str
    analysis_type: str
    analyzed_at: str
    processing_time_seconds: float | None = None
    status: str
    results: Results
    metadata: dict[str, object] | None = None  # the caller's, on items that carried it

    @property
    def patient_key(self) -> PatientKey:
        """The stored key the item is under (a shown item's clinic-local id reads as a key without a clinic)."""
        return PatientKey.parse(self.user_id)

    @property
    def patient(self) -> ClinicPatientId:
        """The id the clinic knows the patient by."""
        return self.patient_key.patient

    @property
    def clinic_id(self) -> str | None:
        """The item's clinic: its key's, or (an item from before keys named it, or one as shown) its
        `clinic_id` attribute, or its `metadata.clinic_id`."""
        extra = self.model_extra.get("clinic_id") if self.model_extra else None
        written = self.metadata.get("clinic_id") if self.metadata else None
        return self.patient_key.clinic_id or next((c for c in (extra, written) if isinstance(c, str) and c), None)

    def shown(self) -> ResultItem:
        """The item as the APIs show it: the clinic's own patient id as `user_id`, and its clinic named."""
        key = self.patient_key
        clinic = {"clinic_id": key.clinic_id} if key.clinic_id else {}
        # a shallow copy, not a second validation of the whole item: the API shows pages of them
        return self.model_copy(update={**clinic, "user_id": str(key.patient)})


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
    analyzed_at: str | None = None
    results: PartialResults | None = None


DocumentT = TypeVar("DocumentT", bound=Document)


def parse_document(model: type[DocumentT], document: object, what: str,
                   error: type[Exception] = InputError) -> DocumentT:
    """`document` as `model`; `error` (an InputError unless named) naming `what` and each field that is
    wrong when it is not.

    A stage's input that does not parse cannot be analysed by retrying, so the job fails at once
    with this message (shared.domain.errors) and the document stays where it is for a person to read."""
    try:
        return model.model_validate(document)
    except ValidationError as problem:
        raise error(f"{what} is not a valid {model.__name__}: {wrong_fields(problem)}") from None


def wrong_fields(error: ValidationError) -> str:
    """Each field that is wrong and why, in words (never the values: they may be PHI)."""
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(document)'}: {e['msg']}"
                         for e in error.errors()[:5])
    more = f" (and {error.error_count() - 5} more)" if error.error_count() > 5 else ""
    return problems + more


__all__ = ["Adherence", "Answer", "AnswerTranscript", "Answers", "AudioFindings", "AudioQuality", "BaselineReport",
           "ClinicalSummary", "Compliance", "Document", "DocumentT", "DosingStep", "DosingVerdict",
           "Emotion", "EmotionMoment", "EmotionScore", "EvidenceFrame", "Expressivity", "FusionDocument",
           "MarkerBaseline", "MarkerValue", "Markers", "MultimodalFusion", "Number", "OptionsReport",
           "PartialResultItem", "PartialResults", "PillDetector", "RecordingSource", "ResultItem", "Results", "ReviewClip", "RiskEvidence",
           "Segment", "SelfReport", "StoredMarkers", "SummaryFlag", "Transcript", "TranscriptFlag",
           "TranscriptScreen", "VisionFindings", "Word", "parse_document", "wrong_fields"]
