"""The audio stage's settings (`AUDIO_*`)."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StageSettings


class AudioSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIO_", extra="ignore", frozen=True)

    vad_model_path: Path = Path("models/silero_vad.onnx")
    # prosody_rules: the offline default (a documented heuristic); speechbrain: a trained
    # EncoderClassifier from AUDIO_SPEECHBRAIN_MODEL_DIR (needs requirements-speechbrain.txt).
    emotion_backend: Literal["prosody_rules", "speechbrain"] = "prosody_rules"
    speechbrain_model_dir: Path | None = None
    # The transcript is patient speech: off unless a deployment asks for it.
    transcript_enabled: bool = False
    whisper_model_path: Path = Path("models/whisper-tiny.en")
    # CPU threads for the models (Whisper, torch); the worker runs one analysis at a time.
    model_threads: int = Field(2, ge=1, le=64)
    sample_rate: int = 16000  # the sound track is analysed at this rate
