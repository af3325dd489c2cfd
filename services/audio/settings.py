"""The audio stage's settings (`AUDIO_*`)."""

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import StageSettings


class AudioSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="AUDIO_", extra="ignore", frozen=True)

    vad_model_path: Path = Path("models/silero_vad.onnx")
    # none (default): no validated speech-emotion model ships, so audio_emotion is not
    # assessed and says so. speechbrain: a deployment's own trained EncoderClassifier from
    # AUDIO_SPEECHBRAIN_MODEL_DIR (needs requirements-speechbrain.txt; see emotion.py).
    emotion_backend: Literal["none", "speechbrain"] = "none"
    speechbrain_model_dir: Path | None = None
    # On by default: the medication self-report and the transcript flags read it. It is patient
    # speech (kept in the results, never logged); a check-in's options may leave it out.
    transcript_enabled: bool = True
    whisper_model_path: Path = Path("models/whisper-tiny.en")
    # Multilingual Whisper base: transcribes clinics whose patients speak other languages (the clinics
    # file's `languages`) and identifies every check-in's language. Empty: English only (tiny.en).
    whisper_multilingual_model_path: Path | None = Path("models/whisper-base")
    # CPU threads for the models (Whisper, torch); the worker runs one analysis at a time.
    model_threads: int = Field(2, ge=1, le=64)
    sample_rate: int = 16000  # the sound track is analysed at this rate

    @field_validator("whisper_multilingual_model_path", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value
