"""Speech emotion with a speechbrain ``EncoderClassifier`` loaded from a local model folder.

The folder is what a deployment provides (e.g. an emotion model trained on
IEMOCAP): a ``hyperparams.yaml`` declaring ``compute_features``,
``mean_var_norm``, ``embedding_model``, ``classifier``, ``label_encoder`` and a
``pretrainer`` whose files (``embedding_model.ckpt``, ``classifier.ckpt``,
``label_encoder.ckpt`` unless the yaml names others) lie in the same folder.
Nothing is fetched from a hub: ``HF_HUB_OFFLINE`` is set before speechbrain is
imported and the source is a local path.

speechbrain imports torchaudio at import time, so this backend needs torch and a
matching torchaudio (``services/audio/requirements-speechbrain.txt``); the audio
service without it reports no speech emotion (the default). Audio is passed as
tensors (read with soundfile by the analyser), never through torchaudio's loader.

The model's measured accuracy, when its provider states it, sits beside it in
``validation.json`` (``emotion.load_validation``).
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import numpy as np

from services.audio.emotion import load_validation
from services.audio.vad import SAMPLE_RATE
from shared.domain.errors import ModelUnavailable

MODEL_SETTING = "AUDIO_SPEECHBRAIN_MODEL_DIR"

# Abbreviations used by common speech-emotion corpora (IEMOCAP: neu/ang/hap/sad,
# RAVDESS/CREMA-D style names) mapped to the seed's labels; others are kept, lower-cased.
LABELS = {
    "neu": "neutral", "neutral": "neutral",
    "ang": "angry", "anger": "angry", "angry": "angry",
    "hap": "happy", "happiness": "happy", "happy": "happy", "exc": "happy",
    "sad": "sad", "sadness": "sad",
    "cal": "calm", "calm": "calm",
    "fea": "anxious", "fear": "anxious", "fearful": "anxious",
    "dis": "disgust", "disgust": "disgust",
    "sur": "surprised", "surprise": "surprised", "surprised": "surprised",
}


class SpeechBrainEmotion:
    """``classify(audio)`` -> {label: probability} for one stretch of 16 kHz mono speech."""

    def __init__(self, model_dir: Path, *, threads: int = 1) -> None:
        model_dir = Path(model_dir)
        if not (model_dir / "hyperparams.yaml").is_file():
            reason = "the speechbrain model folder does not exist or has no hyperparams.yaml"
            raise ModelUnavailable(MODEL_SETTING, model_dir, reason)
        self.validation = load_validation(model_dir, MODEL_SETTING)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder only; never the hub
        try:
            import torch
            from speechbrain.inference.classifiers import EncoderClassifier
        except ImportError as exc:
            reason = (
                f"speechbrain cannot be imported ({exc}); install services/audio/requirements-speechbrain.txt "
                "or unset AUDIO_EMOTION_BACKEND (no speech emotion)"
            )
            raise ModelUnavailable(MODEL_SETTING, model_dir, reason) from exc
        torch.set_num_threads(threads)
        self._torch = torch
        # speechbrain links the yaml and checkpoints here (the model folder itself may be read-only)
        self._savedir = tempfile.mkdtemp(prefix="speechbrain-")
        try:
            self._model = EncoderClassifier.from_hparams(
                source=str(model_dir.resolve()),
                savedir=self._savedir,
                run_opts={"device": "cpu"},
            )
            index = self._model.hparams.label_encoder.ind2lab  # class index -> label
            self._labels = [str(index[i]) for i in range(len(index))]
        except Exception as exc:  # yaml, checkpoint and module errors come in many types
            raise ModelUnavailable(MODEL_SETTING, model_dir, f"speechbrain cannot load the model ({exc})") from exc
        if not self._labels:
            raise ModelUnavailable(MODEL_SETTING, model_dir, "the model's label encoder has no labels")
        self.name = f"speechbrain EncoderClassifier ({model_dir.name})"
        try:  # one real call proves the model runs before the worker takes jobs
            self.classify(np.zeros(SAMPLE_RATE, dtype=np.float32))
        except Exception as exc:
            raise ModelUnavailable(MODEL_SETTING, model_dir, f"the model does not run ({exc})") from exc

    def classify(self, audio: np.ndarray) -> dict[str, float]:
        torch = self._torch
        wavs = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None, :]
        with torch.inference_mode():
            out_prob, _score, _index, _labels = self._model.classify_batch(wavs, torch.ones(1))
        values = out_prob.reshape(-1).double().numpy()
        if values.size != len(self._labels):
            raise RuntimeError(f"the model gave {values.size} scores for {len(self._labels)} labels")
        probs = _probabilities(values)
        merged: dict[str, float] = {}
        for label, p in zip(self._labels, probs):
            name = LABELS.get(label.strip().lower(), label.strip().lower())
            merged[name] = merged.get(name, 0.0) + float(p)  # e.g. IEMOCAP's hap + exc
        return merged


def _probabilities(values: np.ndarray) -> np.ndarray:
    """The classifier's output as probabilities.

    speechbrain's classifiers end in log-softmax (log-posteriors, the documented
    output of ``classify_batch``); some end in softmax, others give logits.
    """
    if np.all(values <= 1e-6) and math.isclose(float(np.exp(values).sum()), 1.0, abs_tol=1e-3):
        return np.exp(values)
    if np.all(values >= 0) and math.isclose(float(values.sum()), 1.0, abs_tol=1e-3):
        return values
    shifted = np.exp(values - values.max())  # logits
    return shifted / shifted.sum()
