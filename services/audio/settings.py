from pathlib import Path
from typing import Literal

from pydantic import Field

from shared.settings import CommonSettings


class AudioSettings(CommonSettings):
    service_name: str = "schizodot-audio"
    vad_model_path: Path = Field(Path("models/silero_vad.onnx"), validation_alias="AUDIO_VAD_MODEL_PATH")
    # none (default): no validated speech-emotion model ships, so audio_emotion is not
    # assessed and says so. speechbrain: a deployment's own trained EncoderClassifier from
    # AUDIO_SPEECHBRAIN_MODEL_DIR (needs requirements-speechbrain.txt; see emotion.py).
    emotion_backend: Literal["none", "speechbrain"] = Field("none", validation_alias="AUDIO_EMOTION_BACKEND")
    speechbrain_model_dir: Path | None = Field(None, validation_alias="AUDIO_SPEECHBRAIN_MODEL_DIR")
    # The transcript is patient speech: off unless a deployment asks for it.
    transcript_enabled: bool = Field(False, validation_alias="AUDIO_TRANSCRIPT_ENABLED")
    whisper_model_path: Path = Field(Path("models/whisper-tiny.en"), validation_alias="AUDIO_WHISPER_MODEL_PATH")
    # CPU threads for the models (Whisper, torch); the worker runs one analysis at a time.
    model_threads: int = Field(2, ge=1, le=64, validation_alias="AUDIO_MODEL_THREADS")
    sample_rate: int = 16000
