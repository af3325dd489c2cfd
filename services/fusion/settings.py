"""The fusion stage's settings (`FUSION_*`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StageSettings


class FusionSettings(StageSettings):
    """Every threshold of the fusion rules (see services/fusion/rules.py and baseline.py)."""

    model_config = SettingsConfigDict(env_prefix="FUSION_", extra="ignore", frozen=True)
    # How much each modality counts when their emotions are combined (before
    # each is scaled by its own confidence).
    face_weight: float = Field(0.6, ge=0, le=1)
    voice_weight: float = Field(0.4, ge=0, le=1)
    # A negative overall emotion at or above this confidence is a risk factor.
    negative_affect_confidence: float = Field(0.5, ge=0, le=1)
    # Reduced speech: pauses take at least this share of the speaking time ...
    reduced_speech_pause_ratio: float = Field(0.6, ge=0, le=1)
    # ... or speech fills less than this share of the recording.
    min_speech_share: float = Field(0.2, ge=0, le=1)
    # Flat facial affect: expressivity (blendshape activity, from vision) below
    # this. The vision service's own calibration notes are in services/vision/emotion.py.
    flat_affect_max_activity: float = Field(0.03, ge=0)
    # Monotone voice: pitch variability below this many semitones (conversational
    # speech is typically 2-4).
    monotone_max_f0_variability: float = Field(1.0, ge=0)
    # Confidence is multiplied by this for each expected modality that could not be assessed.
    missing_modality_penalty: float = Field(0.6, ge=0, le=1)

    # Change from the patient's own baseline (their earlier SchizodotUsers items).
    baseline_window: int = Field(10, ge=1, le=100)
    # A marker is compared only when this many earlier check-ins measured it.
    baseline_min_checkins: int = Field(3, ge=1, le=100)
    # A marker this far (as a fraction of the patient's average) on the worse side is a change.
    baseline_change_fraction: float = Field(0.4, gt=0, le=1)
    # This many check-ins in a row (this one included) with medication not taken is a high risk factor.
    missed_medication_streak: int = Field(3, ge=2, le=100)

    # Optional LLM-written summary (Amazon Bedrock, Converse API). Off by default;
    # when it fails, the rule-based summary stands and records why.
    llm_enabled: bool = Field(False)
    llm_model_id: str = Field("anthropic.claude-3-haiku-20240307-v1:0")
    llm_timeout_seconds: float = Field(20.0, gt=0, le=300)
    llm_max_attempts: int = Field(2, ge=1, le=10)
    llm_max_tokens: int = Field(600, ge=50, le=4000)
