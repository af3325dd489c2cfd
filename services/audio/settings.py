from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


class AudioSettings(CommonSettings):
    service_name: str = "schizodot-audio"
    vad_model_path: Path = Field(Path("models/silero_vad.onnx"), validation_alias="AUDIO_VAD_MODEL_PATH")
    emotion_backend: str = Field("prosody_rules", validation_alias="AUDIO_EMOTION_BACKEND")
    sample_rate: int = 16000
