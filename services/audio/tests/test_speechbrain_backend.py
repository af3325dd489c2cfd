"""The speechbrain emotion backend, loaded from a small model folder built here.

speechbrain needs torch with a matching torchaudio, which the main environment
cannot have (see requirements-speechbrain.txt), so the loading tests run in the
backend's own environment, .venv-speechbrain, which ``make test`` builds and runs. In the main environment
they are skipped, and the missing-package path is tested instead.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from services.audio.analysis import AudioAnalyser
from shared.domain.errors import ModelUnavailable

REPO = Path(__file__).resolve().parents[3]
VAD_MODEL = REPO / "models" / "silero_vad.onnx"
HAVE_SPEECHBRAIN = importlib.util.find_spec("speechbrain") is not None
# `make test` sets this for its .venv-speechbrain run, so a venv without speechbrain fails there
# instead of skipping the very tests that run it.
SPEECHBRAIN_REQUIRED = os.environ.get("SCHIZODOT_REQUIRE_SPEECHBRAIN") == "1"
needs_speechbrain = pytest.mark.skipif(
    not HAVE_SPEECHBRAIN, reason="speechbrain is installed only in .venv-speechbrain (make test runs these there)"
)


def test_the_speechbrain_run_has_speechbrain():
    if SPEECHBRAIN_REQUIRED:
        assert HAVE_SPEECHBRAIN, "SCHIZODOT_REQUIRE_SPEECHBRAIN=1 but this venv has no speechbrain: run `make test`"

LABELS = ("neu", "ang", "hap", "sad")  # IEMOCAP's four classes, as its label encoder writes them

# A real (tiny) speechbrain x-vector classifier: Fbank -> sentence mean normalisation ->
# one TDNN block with statistics pooling -> linear + log-softmax, with a label encoder.
HYPERPARAMS = """\
n_mels: 8
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: False
embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector
    in_channels: !ref <n_mels>
    tdnn_blocks: 1
    tdnn_channels: [8]
    tdnn_kernel_sizes: [1]
    tdnn_dilations: [1]
    lin_neurons: 4
classifier: !new:speechbrain.lobes.models.Xvector.Classifier
    input_shape: [null, null, 4]
    lin_blocks: 0
    out_neurons: 4
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
modules:
    compute_features: !ref <compute_features>
    mean_var_norm: !ref <mean_var_norm>
    embedding_model: !ref <embedding_model>
    classifier: !ref <classifier>
pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer
    loadables:
        embedding_model: !ref <embedding_model>
        classifier: !ref <classifier>
        label_encoder: !ref <label_encoder>
"""


def build_tiny_model(folder: Path, favour: str) -> Path:
    """Write hyperparams.yaml and checkpoints whose classifier strongly prefers label ``favour``."""
    import torch
    from hyperpyyaml import load_hyperpyyaml

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hyperparams.yaml").write_text(HYPERPARAMS)
    hparams = load_hyperpyyaml(HYPERPARAMS)
    torch.manual_seed(0)
    classifier = hparams["classifier"]
    with torch.no_grad():  # the favoured class wins whatever the audio: a known answer to map
        last = classifier.out.w
        last.weight.mul_(0.01)
        last.bias.zero_()
        last.bias[LABELS.index(favour)] = 5.0
    torch.save(hparams["embedding_model"].state_dict(), folder / "embedding_model.ckpt")
    torch.save(classifier.state_dict(), folder / "classifier.ckpt")
    encoder = hparams["label_encoder"]
    encoder.update_from_iterable(LABELS)
    encoder.save(folder / "label_encoder.ckpt")
    return folder


def _speech(tmp_path: Path) -> Path:
    raw = tmp_path / "raw.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "I took my medication this morning and I feel fine today, thank you."],
                   check=True, capture_output=True)
    wav = tmp_path / "speech.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", "16000", str(wav)],
                   check=True, capture_output=True)
    return wav


@needs_speechbrain
def test_a_local_speechbrain_model_gives_the_seed_audio_emotion(tmp_path):
    from services.audio.speechbrain_emotion import SpeechBrainEmotion

    model = SpeechBrainEmotion(build_tiny_model(tmp_path / "sb-emotion", favour="hap"))
    assert model.name == "speechbrain EncoderClassifier (sb-emotion)"
    probs = model.classify(soundfile.read(_speech(tmp_path), dtype="float32")[0])
    assert set(probs) == {"neutral", "angry", "happy", "sad"}  # IEMOCAP abbreviations mapped to the seed's labels
    assert sum(probs.values()) == pytest.approx(1.0, abs=1e-4)  # log-posteriors turned into probabilities
    assert max(probs, key=probs.get) == "happy" and probs["happy"] > 0.9

    analyser = AudioAnalyser(VAD_MODEL, emotion_model=model)
    result = analyser.analyse(tmp_path / "speech.wav")
    emotion = result["audio_emotion"]
    assert emotion["assessed"] is True and emotion["reason"] is None
    assert emotion["method"] == "speechbrain EncoderClassifier (sb-emotion)"
    # no validation.json beside the model: its labels are shown, and marked as not for fusion
    assert emotion["validation"] is None and "without its measured accuracy" in emotion["note"]
    assert result["models"]["emotion"] == emotion["method"]
    assert emotion["primary_emotion"] == "happy" and emotion["confidence"] > 0.9
    assert [e["emotion"] for e in emotion["all_emotions"]][0] == "happy"
    assert sum(e["confidence"] for e in emotion["all_emotions"]) == pytest.approx(1.0, abs=0.01)
    assert json.loads(json.dumps(result)) == result


@needs_speechbrain
def test_the_models_stated_accuracy_travels_with_its_labels(tmp_path):
    from services.audio.speechbrain_emotion import SpeechBrainEmotion

    folder = build_tiny_model(tmp_path / "validated", favour="sad")
    stated = {"dataset": "IEMOCAP session 5 (held out)", "n": 942, "unweighted_average_recall": 0.68}
    (folder / "validation.json").write_text(json.dumps(stated))
    model = SpeechBrainEmotion(folder)
    assert model.validation == stated
    emotion = AudioAnalyser(VAD_MODEL, emotion_model=model).analyse(_speech(tmp_path))["audio_emotion"]
    assert emotion["primary_emotion"] == "sad" and emotion["validation"] == stated and "note" not in emotion


@needs_speechbrain
def test_silence_gets_no_speechbrain_emotion(tmp_path):
    from services.audio.speechbrain_emotion import SpeechBrainEmotion

    analyser = AudioAnalyser(VAD_MODEL, emotion_model=SpeechBrainEmotion(build_tiny_model(tmp_path / "m", "sad")))
    silence = tmp_path / "silence.wav"
    soundfile.write(silence, np.zeros(3 * 16000, np.float32), 16000, subtype="PCM_16")
    emotion = analyser.analyse(silence)["audio_emotion"]
    assert emotion["assessed"] is False and emotion["primary_emotion"] is None
    assert emotion["reason"] == "no speech detected in 3.0 s of audio"
    assert emotion["method"] == "speechbrain EncoderClassifier (m)"


@needs_speechbrain
def test_a_folder_with_a_broken_checkpoint_names_the_setting(tmp_path):
    from services.audio.speechbrain_emotion import SpeechBrainEmotion

    folder = build_tiny_model(tmp_path / "broken", favour="neu")
    (folder / "classifier.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelUnavailable, match="AUDIO_SPEECHBRAIN_MODEL_DIR") as caught:
        SpeechBrainEmotion(folder)
    assert "speechbrain cannot load the model" in str(caught.value)


def test_a_missing_model_folder_names_the_setting(tmp_path):
    from services.audio.speechbrain_emotion import SpeechBrainEmotion

    with pytest.raises(ModelUnavailable, match="AUDIO_SPEECHBRAIN_MODEL_DIR") as caught:
        SpeechBrainEmotion(tmp_path / "no-such-model")
    assert caught.value.setting == "AUDIO_SPEECHBRAIN_MODEL_DIR"
    assert "no hyperparams.yaml" in str(caught.value)


@pytest.mark.skipif(HAVE_SPEECHBRAIN, reason="tests the environment without speechbrain")
def test_without_speechbrain_installed_the_backend_is_unavailable_with_a_fix(tmp_path):
    from services.audio.speechbrain_emotion import SpeechBrainEmotion

    (tmp_path / "hyperparams.yaml").write_text("n_mels: 8\n")
    with pytest.raises(ModelUnavailable, match="AUDIO_SPEECHBRAIN_MODEL_DIR") as caught:
        SpeechBrainEmotion(tmp_path)
    assert "requirements-speechbrain.txt" in str(caught.value) and "unset AUDIO_EMOTION_BACKEND" in str(caught.value)
