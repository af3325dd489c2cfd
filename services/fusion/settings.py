from pydantic import Field

from shared.settings import CommonSettings


class FusionSettings(CommonSettings):
    """Every threshold of the fusion rules (see services/fusion/rules.py and baseline.py)."""

    service_name: str = "schizodot-fusion"
    # How much each side counts when validated face and voice emotions are combined
    # (before each is scaled by its own confidence).
    face_weight: float = Field(0.6, ge=0, le=1, validation_alias="FUSION_FACE_WEIGHT")
    voice_weight: float = Field(0.4, ge=0, le=1, validation_alias="FUSION_VOICE_WEIGHT")
    # The overall emotion's confidence is multiplied by this for each side (face, voice) left out.
    missing_modality_penalty: float = Field(0.6, ge=0, le=1, validation_alias="FUSION_MISSING_MODALITY_PENALTY")

    # Change from the patient's own baseline (their earlier SchizodotUsers items).
    baseline_window: int = Field(10, ge=2, le=100, validation_alias="FUSION_BASELINE_WINDOW")
    # A marker is compared only when this many earlier check-ins measured it the same way.
    baseline_min_checkins: int = Field(3, ge=2, le=100, validation_alias="FUSION_BASELINE_MIN_CHECKINS")
    # This many check-ins in a row (this one included) with medication not taken is a high risk factor.
    missed_medication_streak: int = Field(3, ge=2, le=100, validation_alias="FUSION_MISSED_MEDICATION_STREAK")

    # Optional LLM-written summary (Amazon Bedrock, Converse API). Off by default;
    # when it fails, the rule-based summary stands and records why.
    llm_enabled: bool = Field(False, validation_alias="FUSION_LLM_ENABLED")
    llm_model_id: str = Field("anthropic.claude-3-haiku-20240307-v1:0", validation_alias="FUSION_LLM_MODEL_ID")
    llm_timeout_seconds: float = Field(20.0, gt=0, le=300, validation_alias="FUSION_LLM_TIMEOUT_SECONDS")
    llm_max_attempts: int = Field(2, ge=1, le=10, validation_alias="FUSION_LLM_MAX_ATTEMPTS")
    llm_max_tokens: int = Field(600, ge=50, le=4000, validation_alias="FUSION_LLM_MAX_TOKENS")
