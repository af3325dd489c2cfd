from pydantic import Field

from shared.settings import CommonSettings


class FusionSettings(CommonSettings):
    service_name: str = "schizodot-fusion"
    # How much each modality counts when their emotions are combined (before
    # each is scaled by its own confidence).
    face_weight: float = Field(0.6, ge=0, le=1, validation_alias="FUSION_FACE_WEIGHT")
    voice_weight: float = Field(0.4, ge=0, le=1, validation_alias="FUSION_VOICE_WEIGHT")
    # A negative overall emotion at or above this confidence is a risk factor.
    negative_affect_confidence: float = Field(0.5, ge=0, le=1, validation_alias="FUSION_NEGATIVE_AFFECT_CONFIDENCE")
    # Reduced speech: pauses take more than this share of the recording.
    reduced_speech_pause_ratio: float = Field(0.6, ge=0, le=1, validation_alias="FUSION_REDUCED_SPEECH_PAUSE_RATIO")
    # Confidence is multiplied by this for each expected modality that could not be assessed.
    missing_modality_penalty: float = Field(0.6, ge=0, le=1, validation_alias="FUSION_MISSING_MODALITY_PENALTY")
