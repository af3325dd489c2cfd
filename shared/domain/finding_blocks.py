"""The blocks of the documents the stages hand each other (shared.domain.findings), typed for the code
that reads them: emotions, compliance with its dosing steps, evidence frames, review clip and a
reviewer's verdict, the transcript, audio quality, markers with their baseline, answers, the fusion
block with its risk evidence and flags, the clinical summary and the options report.

Each is a `Document`: it dumps exactly as it was given (fields it did not carry are not added,
numbers keep their type), and what it does not declare is kept as an extra field, as
`shared.domain.job.Job` keeps attributes it does not know, so old items and new fields still read.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializationInfo, model_serializer

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


class EmotionMoment(Document):
    """One sampled face frame of the recording (vision's `facial_emotion.timeline`): its top emotion, or
    none and why (`no_reading`)."""

    t: Number | None = None
    emotion: str | None = None
    confidence: Number | None = None
    no_reading: str | None = None


class Expressivity(Document):
    blendshape_std: dict[str, Number] | None = None  # MediaPipe blendshape -> its standard deviation over time


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
    timeline: list[EmotionMoment] | None = None  # vision only
    expressivity: Expressivity | None = None  # vision only


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
    evidence_frame: str | None = None  # the frame's key under artifacts/<job>/


class EvidenceFrame(Document):
    """A saved frame of a dosing step (vision's `compliance.evidence_frames`)."""

    step: str | None = None
    step_id: str | None = None
    t: Number | None = None
    key: str | None = None


class ReviewClip(Document):
    """The cut of the recording a reviewer watches (vision's `compliance.review_clip`)."""

    key: str | None = None
    start_s: Number | None = None
    end_s: Number | None = None
    source: str | None = None
    reason: str | None = None


class DosingVerdict(Document):
    """A reviewer's verdict on the recorded dosing (`compliance.review`, services/results/dosing.py);
    the current one carries its `revision`, the earlier ones (`history`) and what the pipeline said."""

    verdict: str | None = None
    reason: str | None = None
    reason_text: str | None = None
    note: str | None = None
    by: str | None = None
    by_name: str | None = None
    at: str | None = None
    revision: int | None = None
    history: list[DosingVerdict] | None = None


class PillDetector(Document):
    configured: bool | None = None
    model: str | None = None
    note: str | None = None


class Compliance(Document):
    """Observed intake (vision's `compliance`); fusion adds what the patient said (`self_report`)."""

    verification_status: str | None = None
    compliance_score: Number | None = None
    assessed: bool | None = None
    reason: str | None = None
    pill_detector: PillDetector | None = None
    self_report: SelfReport | None = None
    steps: list[DosingStep] | None = None
    face_detected: bool | None = None
    hand_detected: bool | None = None
    pill_detected: bool | None = None
    evidence_frames: list[EvidenceFrame] | None = None
    review_clip: ReviewClip | None = None
    review: DosingVerdict | None = None  # set by a reviewer (services/results/dosing.py)


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
    language_probability: Number | None = None


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


class MarkerBaseline(Document):
    """A marker's `baseline` block as stored (shared.domain.markers.Baseline, which validates it when
    fusion writes it); read here without its consistency rules, so blocks of every version still read."""

    available: bool | None = None
    checkins: int | None = None
    mean: Number | None = None
    sd: Number | None = None
    z_score: Number | None = None
    relative_change: Number | None = None
    notable: bool | None = None
    direction: str | None = None
    reason: str | None = None
    measurable: bool | None = None
    rules_fired: list[str] | None = None
    rci: Number | None = None
    rci_threshold: Number | None = None
    cusum: Number | None = None
    cusum_threshold: Number | None = None
    cusum_checkins: int | None = None


class MarkerValue(Document):
    """One marker of a stored result (shared.domain.markers.Marker as written), for its readers."""

    assessed: bool | None = None
    value: Number | None = None
    unit: str | None = None
    method: str | None = None
    quality_flags: list[str] | None = None
    reason: str | None = None
    baseline: MarkerBaseline | None = None


StoredMarkers = dict[str, MarkerValue]  # a stored result's markers, by name


class AnswerTranscript(Document):
    text: str | None = None
    language: str | None = None


class Answer(Document):
    step_id: str | None = None
    start_s: Number | None = None
    end_s: Number | None = None
    clipped: bool | None = None
    markers: StoredMarkers | None = None
    transcript: AnswerTranscript | str | None = None  # a plain string: the answer's words without their language


class Answers(Document):
    """The markers of each spoken answer, by prompt (audio's `answers`)."""

    assessed: bool | None = None
    reason: str | None = None
    method: str | None = None
    flags: list[str] | None = None
    items: list[Answer] | None = None


# A stage's markers as its artifact carries them (fusion reads them as dicts); a stored result's are typed.
Markers = dict[str, dict[str, Any]]  # marker name -> shared.domain.markers.Marker as a dict (validated there)


class TranscriptFlag(Document):
    """A statement flagged in the transcript (services/fusion/transcript_flags.py)."""

    category: str
    phrase: str
    start: Number | None = None
    end: Number | None = None


class SummaryFlag(Document):
    """A flagged statement as the clinical summary lists it (`clinical_summary.flags`): fusion's
    `TranscriptFlag` with its note and severity; older items may carry `text` for the phrase."""

    phrase: str | None = None
    text: str | None = None
    category: str | None = None
    start: Number | None = None
    end: Number | None = None
    severity: str | None = None
    note: str | None = None


class TranscriptScreen(Document):
    """What the safety screen of the transcript covered (fusion's `transcript_screen`)."""

    assessed: bool | None = None
    reason: str | None = None
    method: str | None = None
    language: str | None = None


class RiskEvidence(Document):
    """One risk factor with its severity and the evidence that raised it (fusion's `risk_evidence`)."""

    factor: str
    severity: str
    evidence: str | None = None


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
    risk_evidence: list[RiskEvidence] | None = None
    method: str | None = None
    overall_emotion_basis: list[str] | None = None  # the sides the overall emotion rests on: face, voice
    face_emotion: str | None = None
    voice_emotion: str | None = None
    emotion_not_used: dict[str, str] | None = None  # side -> why its emotion was left out
    transcript_screen: TranscriptScreen | None = None


class ClinicalSummary(Document):
    emotional_state: str | None = None
    medication_adherence: str | None = None
    risk_assessment: str | None = None
    recommendations: list[str] | None = None
    generated_by: str | None = None
    timestamp: str | None = None
    change_from_baseline: str | None = None
    flags: list[SummaryFlag | str] | None = None
    transcript_screen: TranscriptScreen | None = None


class OptionsReport(Document):
    """What the check-in asked for and what applied (fusion's `results.options`)."""

    analyses_requested: list[str] | None = None
    modalities_analysed: list[str] | None = None
    thresholds: dict[str, Number | None] | None = None
    thresholds_set_on_checkin: dict[str, Number | None] | None = None


__all__ = ["Adherence", "Answer", "AnswerTranscript", "Answers", "AudioQuality", "BaselineReport", "ClinicalSummary",
           "Compliance", "Document", "DosingStep", "DosingVerdict", "Emotion", "EmotionMoment",
           "EmotionScore", "EvidenceFrame", "Expressivity", "MarkerBaseline", "MarkerValue", "Markers",
           "MultimodalFusion", "Number", "OptionsReport", "PillDetector", "RecordingSource", "ReviewClip",
           "RiskEvidence", "Segment", "SelfReport", "StoredMarkers", "SummaryFlag", "Transcript",
           "TranscriptFlag", "TranscriptScreen", "Word"]
