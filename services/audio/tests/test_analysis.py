"""AudioAnalyser with the real Silero VAD model and Praat (parselmouth); fixtures are made here.

Speech comes from espeak-ng with known syllables, words and pauses
(``known_signals``), silence and noise from numpy. Nothing is mocked but the
speech-emotion model, whose real backend (speechbrain) is tested in its own
environment (test_speechbrain_backend.py).
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest

from services.audio import known_signals as known
from services.audio.analysis import AudioAnalyser
from services.audio.emotion import NOT_CONFIGURED, UNVALIDATED_NOTE, load_validation
from services.audio.markers import UNITS
from shared.domain.errors import InputError, ModelUnavailable
from shared.domain.markers import parse

REPO = Path(__file__).resolve().parents[3]
VAD_MODEL = REPO / "models" / "silero_vad.onnx"
RATE = known.RATE
SENTENCES = (known.sentence_of("I", "took", "my medication", "this morning"),
             known.sentence_of("the children", "visited", "the hospital", "on Sunday"),
             known.sentence_of("my sister", "painted", "the kitchen", "yesterday"))


@pytest.fixture(scope="module")
def analyser() -> AudioAnalyser:
    return AudioAnalyser(VAD_MODEL)


@pytest.fixture(scope="module")
def gap_clip(tmp_path_factory) -> tuple[Path, known.KnownSpeech]:
    """Three sentences with exactly 2.0 s and 1.0 s of digital silence between them, 0.5 s before and after."""
    tmp = tmp_path_factory.mktemp("speech")
    speech = known.with_pauses([known.speak(s.text) for s in SENTENCES], [2.0, 1.0],
                               syllables=sum(s.syllables for s in SENTENCES), words=sum(s.words for s in SENTENCES))
    return known.write_wav(tmp / "gap.wav", speech.samples), speech


def values(result: dict) -> dict[str, float | None]:
    return {name: marker["value"] for name, marker in result["vocal_markers"].items()}


def test_speech_with_pauses_gives_its_timing_rate_and_voice(analyser, gap_clip):
    path, truth = gap_clip
    progress: list[tuple[float, str]] = []
    result = analyser.analyse(path, on_progress=lambda fraction, message: progress.append((fraction, message)))
    markers = values(result)

    assert result["speech_detected"] is True
    assert result["duration_seconds"] == pytest.approx(truth.seconds, abs=0.01)
    assert markers["pause_count"] == 2
    assert markers["mean_pause_duration"] == pytest.approx(1.5, abs=0.1)
    assert markers["pause_rate"] == pytest.approx(2 * 60 / truth.span_seconds, rel=0.05)
    assert markers["speaking_fraction"] == pytest.approx(100 * truth.speech_seconds / truth.seconds, abs=3.0)
    assert markers["speech_rate"] == pytest.approx(60 * truth.syllables / truth.span_seconds, rel=0.15)
    assert 70 < markers["pitch_mean"] < 200  # espeak's default English voice is male, around 100-130 Hz
    assert 0.3 < markers["pitch_variability"] < 6 and 40 < markers["intensity"] < 100
    assert 0 < markers["jitter"] < 5 and 0 < markers["shimmer"] < 30 and 0 < markers["hnr"] < 40
    for name, marker in result["vocal_markers"].items():
        assert marker["assessed"] is True and marker["quality_flags"] == [], name
    timing = result["speech_timing"]
    assert timing["pauses"] == 2 and 1.9 <= timing["longest_pause_seconds"] <= 2.1
    assert 0.4 <= timing["speech_onset_seconds"] <= 0.6

    assert result["audio_emotion"] == {"primary_emotion": None, "confidence": None, "all_emotions": [],
                                       "assessed": False, "method": None, "validation": None,
                                       "reason": NOT_CONFIGURED}
    assert result["models"]["vad"] == "silero-vad 6.2.3 (onnx)"
    assert result["models"]["features"].startswith("Praat 6.") and "parselmouth 0.4.7" in result["models"]["features"]
    assert "emotion" not in result["models"]
    assert result["transcript"]["enabled"] is False and result["transcript"]["text"] is None
    quality = result["audio_quality"]
    assert quality["sample_rate_hz"] == RATE and quality["narrowband"] is False
    assert quality["clipped_fraction"] == 0.0 and quality["warnings"] == []
    assert quality["multiple_speakers_suspected"] is False
    assert quality["snr_db"] is None  # the gap is digital silence: no background to measure
    assert json.loads(json.dumps(result)) == result  # plain JSON types only

    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(isinstance(message, str) and message for _, message in progress)


def test_every_marker_has_the_shared_shape_with_unit_and_method(analyser, gap_clip):
    markers = analyser.analyse(gap_clip[0])["vocal_markers"]
    assert list(markers) == list(UNITS)
    for name, document in markers.items():
        marker = parse(document)
        assert marker.unit == UNITS[name] and marker.method, name
        assert math.isfinite(marker.value), name
    assert markers["speech_rate"]["unit"] == "syllables per min"
    assert "de Jong & Wempe" in markers["speech_rate"]["method"]


def test_other_sample_rates_and_stereo_are_converted(analyser, gap_clip, tmp_path):
    stereo = tmp_path / "stereo44k.wav"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(gap_clip[0]), "-ac", "2", "-ar", "44100",
                    str(stereo)], check=True)
    result = analyser.analyse(stereo)
    assert result["audio_quality"]["sample_rate_hz"] == 44100
    assert values(result)["mean_pause_duration"] == pytest.approx(1.5, abs=0.1)


def test_silence_is_measured_as_no_speech_and_nothing_else(analyser, tmp_path):
    result = analyser.analyse(known.write_wav(tmp_path / "silence.wav", np.zeros(12 * RATE)))
    assert result["speech_detected"] is False and result["duration_seconds"] == 12.0
    markers = result["vocal_markers"]
    assert markers["speaking_fraction"]["assessed"] is True and markers["speaking_fraction"]["value"] == 0.0
    for name in set(UNITS) - {"speaking_fraction"}:
        assert markers[name]["assessed"] is False and markers[name]["value"] is None, name
        assert markers[name]["reason"] == "no speech detected in 12.0 s of audio", name
    assert result["audio_emotion"]["assessed"] is False and result["audio_emotion"]["reason"] == NOT_CONFIGURED


def test_white_noise_is_not_speech(analyser, tmp_path):
    noise = np.random.default_rng(7).normal(0.0, 0.1, 5 * RATE).clip(-1, 1)
    result = analyser.analyse(known.write_wav(tmp_path / "noise.wav", noise))
    assert result["speech_detected"] is False
    assert result["vocal_markers"]["pitch_mean"]["reason"] == "no speech detected in 5.0 s of audio"


def test_empty_audio_is_explained(analyser, tmp_path):
    result = analyser.analyse(known.write_wav(tmp_path / "empty.wav", np.zeros(0)))
    assert result["speech_detected"] is False and result["duration_seconds"] == 0.0
    assert {m["reason"] for m in result["vocal_markers"].values()} == {"the recording is empty"}


@pytest.mark.parametrize(
    "content",
    [b"this is not audio at all", b"RIFF\x24\x08\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00\x01\x00"],
    ids=["text", "truncated-header"],
)
def test_corrupt_wav_is_an_input_error(analyser, tmp_path, content):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    with pytest.raises(InputError, match="not a valid WAV file"):
        analyser.analyse(bad)


def test_missing_vad_model_names_the_setting(tmp_path):
    with pytest.raises(ModelUnavailable, match="AUDIO_VAD_MODEL_PATH") as caught:
        AudioAnalyser(tmp_path / "missing.onnx")
    assert caught.value.setting == "AUDIO_VAD_MODEL_PATH"
    assert "does not exist" in str(caught.value)


def test_a_file_that_is_not_a_model_is_unavailable(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00not an onnx graph" * 10)
    with pytest.raises(ModelUnavailable, match="AUDIO_VAD_MODEL_PATH") as caught:
        AudioAnalyser(junk)
    assert caught.value.setting == "AUDIO_VAD_MODEL_PATH"


def test_the_emotion_backend_is_none_unless_a_model_is_chosen(monkeypatch):
    from pydantic import ValidationError

    from services.audio.settings import AudioSettings

    assert AudioSettings().emotion_backend == "none"
    monkeypatch.setenv("AUDIO_EMOTION_BACKEND", "prosody_rules")  # the heuristic measured at chance is gone
    with pytest.raises(ValidationError, match="'none' or 'speechbrain'"):
        AudioSettings()


# --- a configured speech-emotion model ------------------------------------------------------


class FixedModel:
    """A stand-in for a deployment's classifier (the speechbrain loader is tested in its own venv)."""

    def __init__(self, validation: dict | None) -> None:
        self.name = "test classifier"
        self.validation = validation

    def classify(self, audio: np.ndarray) -> dict[str, float]:
        assert audio.size > 0
        return {"sad": 0.6, "neutral": 0.3, "happy": 0.1}


def test_a_validated_model_reports_its_labels_and_its_accuracy(gap_clip):
    validation = {"dataset": "a held-out labelled set", "n": 500, "balanced_accuracy": 0.71}
    emotion = AudioAnalyser(VAD_MODEL, emotion_model=FixedModel(validation)).analyse(gap_clip[0])["audio_emotion"]
    assert emotion["assessed"] is True and emotion["primary_emotion"] == "sad" and emotion["confidence"] == 0.6
    assert emotion["method"] == "test classifier" and emotion["validation"] == validation
    assert [e["emotion"] for e in emotion["all_emotions"]] == ["sad", "neutral", "happy"]
    assert "note" not in emotion


def test_a_model_without_its_accuracy_is_shown_but_marked_unvalidated(gap_clip, tmp_path):
    analyser = AudioAnalyser(VAD_MODEL, emotion_model=FixedModel(None))
    emotion = analyser.analyse(gap_clip[0])["audio_emotion"]
    assert emotion["assessed"] is True and emotion["validation"] is None and emotion["note"] == UNVALIDATED_NOTE
    silent = analyser.analyse(known.write_wav(tmp_path / "silence.wav", np.zeros(3 * RATE)))["audio_emotion"]
    assert silent["assessed"] is False and silent["reason"] == "no speech detected in 3.0 s of audio"
    assert silent["method"] == "test classifier"


def test_validation_json_is_read_and_checked(tmp_path):
    assert load_validation(tmp_path, "AUDIO_SPEECHBRAIN_MODEL_DIR") is None
    (tmp_path / "validation.json").write_text(json.dumps({"dataset": "IEMOCAP session 5", "n": 942,
                                                          "unweighted_average_recall": 0.68}))
    assert load_validation(tmp_path, "AUDIO_SPEECHBRAIN_MODEL_DIR") == {
        "dataset": "IEMOCAP session 5", "n": 942, "unweighted_average_recall": 0.68}
    (tmp_path / "validation.json").write_text(json.dumps({"dataset": "IEMOCAP", "n": 942}))
    with pytest.raises(ModelUnavailable, match="AUDIO_SPEECHBRAIN_MODEL_DIR") as caught:
        load_validation(tmp_path, "AUDIO_SPEECHBRAIN_MODEL_DIR")
    assert "give accuracy, balanced_accuracy or unweighted_average_recall" in str(caught.value)
