"""AudioAnalyser with the real Silero VAD model and openSMILE; fixtures are made here.

Speech comes from espeak-ng (converted to 16 kHz mono s16 with ffmpeg, as the
worker does), silence and noise from numpy. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from services.audio.analysis import EMOTIONS, MARKER_UNITS, AudioAnalyser, prosody_emotion
from shared.errors import InputError, ModelUnavailable

REPO = Path(__file__).resolve().parents[3]
VAD_MODEL = REPO / "models" / "silero_vad.onnx"
RATE = 16_000

REQUIRED_MARKERS = {
    "speech_seconds",
    "pause_ratio",
    "pause_count",
    "mean_pause_seconds",
    "speech_segments",
    "speech_rate",
    "f0_mean_semitones",
    "f0_variability",
    "jitter",
    "shimmer",
    "loudness_mean",
    "loudness_variability",
    "hnr_db",
}



def speak(text: str, out: Path, *extra: str) -> np.ndarray:
    """Synthesise ``text`` and return it as 16 kHz mono float samples (via a PCM s16 WAV)."""
    raw = out.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", *extra, "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(raw), "-ac", "1", "-ar", str(RATE), "-c:a", "pcm_s16le", str(out)],
        check=True,
        capture_output=True,
    )
    samples, rate = soundfile.read(out, dtype="float32")
    assert rate == RATE
    return samples


def write_wav(path: Path, samples: np.ndarray) -> Path:
    soundfile.write(path, np.asarray(samples, dtype=np.float32), RATE, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def analyser() -> AudioAnalyser:
    return AudioAnalyser(VAD_MODEL)


@pytest.fixture(scope="module")
def gap_clip(tmp_path_factory) -> Path:
    """Two utterances with exactly 2.0 s of digital silence between them."""
    tmp = tmp_path_factory.mktemp("speech")
    first = speak("Good morning. I took my medication today and I slept well last night.", tmp / "a.wav")
    second = speak("The voices were quieter this week, and I went for a walk on Sunday.", tmp / "b.wav")
    return write_wav(tmp / "gap.wav", np.concatenate([first, np.zeros(2 * RATE, np.float32), second]))


def test_speech_with_a_gap_gives_speech_time_and_a_two_second_pause(analyser, gap_clip):
    progress: list[tuple[float, str]] = []
    result = analyser.analyse(gap_clip, on_progress=lambda fraction, message: progress.append((fraction, message)))
    markers = {name: marker["value"] for name, marker in result["vocal_markers"].items()}

    assert result["speech_detected"] is True
    duration = result["duration_seconds"]
    assert duration == pytest.approx(soundfile.info(gap_clip).duration, abs=0.01)
    # espeak leaves ~0.1-0.2 s of silence around each utterance, so speech is a bit under duration - 2 s
    assert duration - 2.0 - 1.0 < markers["speech_seconds"] < duration - 2.0
    # the 2.0 s gap plus espeak's own trailing/leading silence, minus silero's 30 ms padding
    assert 1.9 <= markers["longest_pause_seconds"] <= 2.6
    assert markers["pause_count"] >= 1
    assert markers["speech_segments"] == markers["pause_count"] + 1
    assert markers["mean_pause_seconds"] <= markers["longest_pause_seconds"]
    span = markers["speech_seconds"] + markers["pause_seconds"]
    assert markers["pause_ratio"] == pytest.approx(markers["pause_seconds"] / span, abs=0.002)
    assert 0 <= markers["speech_onset_seconds"] < 0.5
    # espeak's default English voice is male, around 100-130 Hz
    assert 70 < markers["f0_mean_hz"] < 200
    assert markers["f0_variability"] > 0 and markers["speech_rate"] > 0 and markers["hnr_db"] is not None

    emotion = result["audio_emotion"]
    assert emotion["assessed"] is True and emotion["reason"] is None
    assert emotion["method"] == "prosody_rules_v1"
    assert emotion["primary_emotion"] in EMOTIONS
    confidences = [e["confidence"] for e in emotion["all_emotions"]]
    assert [e["emotion"] for e in emotion["all_emotions"]][0] == emotion["primary_emotion"]
    assert confidences == sorted(confidences, reverse=True)
    assert sum(confidences) == pytest.approx(1.0, abs=0.01)
    assert emotion["confidence"] == confidences[0]

    assert result["models"] == {"vad": "silero-vad 6.2.3 (onnx)", "features": "opensmile 2.6.0 eGeMAPSv02",
                                "emotion": "prosody_rules_v1"}
    assert result["transcript"]["enabled"] is False and result["transcript"]["text"] is None
    quality = result["audio_quality"]
    assert quality["sample_rate_hz"] == RATE and quality["narrowband"] is False
    assert quality["clipped_fraction"] == 0.0 and quality["warnings"] == [] and quality["withheld_markers"] == {}
    assert quality["snr_db"] is None  # the gap is digital silence: no background to measure
    assert json.loads(json.dumps(result)) == result  # plain JSON types only

    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0
    assert all(isinstance(message, str) and message for _, message in progress)


def test_every_marker_has_a_unit_and_a_plain_value(analyser, gap_clip):
    markers = analyser.analyse(gap_clip)["vocal_markers"]
    assert REQUIRED_MARKERS <= set(markers)
    assert set(markers) == set(MARKER_UNITS)
    for name, marker in markers.items():
        assert set(marker) == {"value", "unit"}, name
        assert isinstance(marker["unit"], str) and marker["unit"], name
        assert marker["value"] is None or (type(marker["value"]) in (int, float) and math.isfinite(marker["value"])), name


def test_other_sample_rates_and_stereo_are_converted(analyser, gap_clip, tmp_path):
    stereo = tmp_path / "stereo44k.wav"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(gap_clip), "-ac", "2", "-ar", "44100", str(stereo)], check=True
    )
    result = analyser.analyse(stereo)
    assert result["speech_detected"] is True
    assert 1.9 <= result["vocal_markers"]["longest_pause_seconds"]["value"] <= 2.6


def test_silence_is_not_given_an_emotion(analyser, tmp_path):
    result = analyser.analyse(write_wav(tmp_path / "silence.wav", np.zeros(12 * RATE)))
    assert result["speech_detected"] is False
    assert result["duration_seconds"] == 12.0
    assert result["audio_emotion"] == {
        "primary_emotion": None,
        "confidence": None,
        "all_emotions": [],
        "method": "prosody_rules_v1",
        "assessed": False,
        "reason": "no speech detected in 12.0 s of audio",
    }
    markers = {name: marker["value"] for name, marker in result["vocal_markers"].items()}
    assert markers["speech_seconds"] == 0.0 and markers["pause_count"] == 0 and markers["speech_segments"] == 0
    for undefined in ("pause_ratio", "mean_pause_seconds", "speech_rate", "f0_mean_semitones", "f0_variability",
                      "jitter", "shimmer", "hnr_db", "loudness_mean", "loudness_variability"):
        assert markers[undefined] is None, undefined


def test_white_noise_is_not_speech(analyser, tmp_path):
    noise = np.random.default_rng(7).normal(0.0, 0.1, 5 * RATE).clip(-1, 1)
    result = analyser.analyse(write_wav(tmp_path / "noise.wav", noise))
    assert result["speech_detected"] is False
    assert result["audio_emotion"]["assessed"] is False
    assert result["audio_emotion"]["reason"] == "no speech detected in 5.0 s of audio"


def test_very_short_speech_is_explained_not_guessed(analyser, tmp_path):
    speak("Yes.", tmp_path / "yes.wav")
    result = analyser.analyse(tmp_path / "yes.wav")
    assert result["duration_seconds"] < 1.0
    emotion = result["audio_emotion"]
    assert emotion["assessed"] is False and emotion["primary_emotion"] is None and emotion["all_emotions"] == []
    if result["speech_detected"]:
        assert "s of speech detected; at least 1.5 s is needed" in emotion["reason"]
    else:
        assert emotion["reason"].startswith("no speech detected in 0.")


def test_empty_audio_is_explained(analyser, tmp_path):
    result = analyser.analyse(write_wav(tmp_path / "empty.wav", np.zeros(0)))
    assert result["speech_detected"] is False and result["duration_seconds"] == 0.0
    assert result["audio_emotion"]["reason"] == "no speech detected in 0.0 s of audio"


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


def test_unknown_emotion_backend_is_rejected_by_the_settings(monkeypatch):
    from pydantic import ValidationError

    from services.audio.settings import AudioSettings

    monkeypatch.setenv("AUDIO_EMOTION_BACKEND", "wav2vec2")
    with pytest.raises(ValidationError, match="prosody_rules"):
        AudioSettings()


def _markers(**values) -> dict:
    base = {name: None for name in MARKER_UNITS}
    base.update(speech_seconds=20.0, pause_seconds=4.0)
    base.update(values)
    return {name: {"value": value, "unit": MARKER_UNITS[name]} for name, value in base.items()}


@pytest.mark.parametrize(
    ("cues", "expected"),
    [
        # every cue at its reference value
        (dict(loudness_mean=0.8, loudness_variability=0.7, f0_variability=3.0, speech_rate=3.0, pause_ratio=0.15), "neutral"),
        # quiet, flat, slow, many pauses
        (dict(loudness_mean=0.3, loudness_variability=0.5, f0_variability=1.2, speech_rate=2.0, pause_ratio=0.45), "sad"),
        # loud, large loudness swings, fast
        (dict(loudness_mean=1.8, loudness_variability=1.0, f0_variability=4.0, speech_rate=4.2, pause_ratio=0.08), "angry"),
        # lively pitch, fast, normal loudness
        (dict(loudness_mean=0.9, loudness_variability=0.75, f0_variability=5.5, speech_rate=3.8, pause_ratio=0.12), "happy"),
        # fast with restricted pitch
        (dict(loudness_mean=0.8, loudness_variability=0.7, f0_variability=1.5, speech_rate=4.5, pause_ratio=0.12), "anxious"),
        # soft, slowish, fluent
        (dict(loudness_mean=0.45, loudness_variability=0.62, f0_variability=2.6, speech_rate=2.5, pause_ratio=0.05), "calm"),
    ],
)
def test_prosody_rules_follow_the_documented_cue_profiles(cues, expected):
    emotion = prosody_emotion(_markers(**cues), duration_seconds=30.0)
    assert emotion["primary_emotion"] == expected, emotion["all_emotions"]
    assert sum(e["confidence"] for e in emotion["all_emotions"]) == pytest.approx(1.0, abs=0.01)
