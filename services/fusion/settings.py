"""The fusion stage's settings (`FUSION_*`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StageSettings


class FusionSettings(StageSettings):
    """Every threshold of the fusion rules (see services/fusion/rules.py and baseline.py)."""

    model_config = SettingsConfigDict(env_prefix="FUSION_", extra="ignore", frozen=True)
    # How much each side counts when validated face and voice emotions are combined
    # (before each is scaled by its own confidence).
    face_weight: float = Field(0.6, ge=0, le=1)
    voice_weight: float = Field(0.4, ge=0, le=1)
    # The overall emotion's confidence is multiplied by this for each side (face, voice) left out.
    missing_modality_penalty: float = Field(0.6, ge=0, le=1)

    # Change from the patient's own baseline (their earlier SchizodotUsers items).
    baseline_window: int = Field(10, ge=2, le=100)
    # A marker is compared only when this many earlier check-ins measured it the same way.
    baseline_min_checkins: int = Field(3, ge=2, le=100)
    # The quality gate (baseline.py): a recording below these is "not measurable" and raises no change.
    quality_min_voiced_seconds: float = Field(2.0, ge=0, le=600)
    # Audio's SNR estimate reads 9-18 dB on clean espeak-ng check-ins of 8 s (its "background" windows hold speech
    # edges and codec noise), so the gate sits below that: only a recording drowned in noise is not measurable.
    quality_min_snr_db: float = Field(5.0, ge=-20, le=60)
    quality_max_clipped_fraction: float = Field(0.01, ge=0, le=1)  # audio's own clipping limit (quality.py)
    # This many check-ins in a row (this one included) with medication not taken is a high risk factor.
    missed_medication_streak: int = Field(3, ge=2, le=100)

    # Optional LLM-written summary (Amazon Bedrock, Converse API). Off by default;
    # when it fails, the rule-based summary stands and records why.
    llm_enabled: bool = Field(False)
    llm_model_id: str = Field("anthropic.claude-3-haiku-20240307-v1:0")
    llm_timeout_seconds: float = Field(20.0, gt=0, le=300)
    llm_max_attempts: int = Field(2, ge=1, le=10)
    llm_max_tokens: int = Field(600, ge=50, le=4000)
