"""Speech emotion: reported only from a configured model, never guessed.

No speech-emotion model with measured validity ships offline (see
ENVIRONMENT.md), and categorical emotion labels are not validated markers in
schizophrenia. So by default ``audio_emotion`` abstains, in the seed's shape:
``assessed: false``, no label, and the reason ``NOT_CONFIGURED``. The prosody
heuristic that used to fill it scored 8 of 35 labelled emotional-speech clips
(23 %, chance 25 %) and is gone.

A deployment may configure its own model (``AUDIO_EMOTION_BACKEND=speechbrain``,
``speechbrain_emotion.py``). Its labels are reported with the model named. When
the model folder also holds ``validation.json`` (the model's accuracy on a
labelled set: ``{"dataset": ..., "n": ..., "accuracy" or "balanced_accuracy" or
"unweighted_average_recall": ...}``), that is carried as ``validation`` and
fusion may use the labels; without it the labels are shown but fusion leaves
them out, and ``note`` says so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.domain.errors import ModelUnavailable

NOT_CONFIGURED = "no validated speech-emotion model is configured"
# Prosody over less speech than this is too short to classify.
MIN_SPEECH_SECONDS = 1.5
VALIDATION_FILE = "validation.json"
UNVALIDATED_NOTE = (f"the model came without its measured accuracy ({VALIDATION_FILE} in the model folder), "
                    "so its labels are shown but not used to combine face and voice")


class ModelValidation(BaseModel):
    """A model's measured accuracy on labelled speech, as its provider states it."""

    model_config = ConfigDict(extra="allow", frozen=True)

    dataset: str = Field(min_length=1)
    n: int = Field(gt=0, description="labelled clips the figure was measured on")
    accuracy: float | None = Field(None, gt=0, le=1)
    balanced_accuracy: float | None = Field(None, gt=0, le=1)
    unweighted_average_recall: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _has_a_figure(self) -> "ModelValidation":
        if self.accuracy is None and self.balanced_accuracy is None and self.unweighted_average_recall is None:
            raise ValueError("give accuracy, balanced_accuracy or unweighted_average_recall")
        return self


def load_validation(model_dir: Path, setting: str) -> dict | None:
    """The model folder's validation.json as a dict, None when absent; a malformed file is ModelUnavailable."""
    path = Path(model_dir) / VALIDATION_FILE
    if not path.is_file():
        return None
    try:
        return ModelValidation.model_validate(json.loads(path.read_text())).model_dump(exclude_none=True)
    except (ValueError, ValidationError) as exc:
        raise ModelUnavailable(setting, path, f"{VALIDATION_FILE} is not a valid accuracy statement ({exc})") from exc


class SpeechEmotionModel(Protocol):
    """A trained speech-emotion classifier (e.g. ``speechbrain_emotion.SpeechBrainEmotion``)."""

    name: str
    validation: dict | None

    def classify(self, audio: np.ndarray) -> dict[str, float]: ...


def abstain(reason: str, method: str | None = None, validation: dict | None = None) -> dict:
    """``audio_emotion`` without a label, in the seed's shape."""
    return {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
            "method": method, "validation": validation, "reason": reason}


def not_assessable(speech_seconds: float, duration_seconds: float) -> str | None:
    """Why no emotion can be read from this audio (no or too little speech), or None."""
    if speech_seconds <= 0:
        return f"no speech detected in {duration_seconds:.1f} s of audio"
    if speech_seconds < MIN_SPEECH_SECONDS:
        return (f"only {speech_seconds:.1f} s of speech detected; at least {MIN_SPEECH_SECONDS:.1f} s "
                "is needed to estimate emotion")
    return None


def labelled(model: SpeechEmotionModel, probabilities: dict[str, float]) -> dict:
    """``audio_emotion`` from the model's probabilities (already averaged over the speech)."""
    ranked = sorted(probabilities.items(), key=lambda item: -item[1])
    result = {
        "primary_emotion": ranked[0][0],
        "confidence": round(ranked[0][1], 3),
        "all_emotions": [{"emotion": label, "confidence": round(p, 3)} for label, p in ranked],
        "assessed": True,
        "method": model.name,
        "validation": model.validation,
        "reason": None,
    }
    if model.validation is None:
        result["note"] = UNVALIDATED_NOTE
    return result
