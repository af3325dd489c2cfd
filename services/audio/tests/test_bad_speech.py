"""Speech that is hard to measure: each gives a reading with quality flags, or
``assessed: false`` with the reason; never an invented value, never a crash.

The recordings are made here: espeak-ng speech with known timing
(``known_signals``), degraded with numpy and Praat's resampler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.audio import known_signals as known
from services.audio.analysis import AudioAnalyser
from services.audio.markers import UNITS
from shared.domain.markers import parse

REPO = Path(__file__).resolve().parents[3]
VAD_MODEL = REPO / "models" / "silero_vad.onnx"
VOICE = ("pitch_mean", "pitch_variability", "jitter", "shimmer", "hnr")
TIMING = ("speaking_fraction", "pause_count", "pause_rate", "mean_pause_duration")
TEXTS = ("I took my medication this morning", "the children visited the hospital on Sunday",
         "my sister painted the kitchen yesterday")


@pytest.fixture(scope="module")
def analyser() -> AudioAnalyser:
    return AudioAnalyser(VAD_MODEL)


def checkin(voice: str = "en", pitch: int = 50) -> known.KnownSpeech:
    return known.with_pauses([known.speak(t, voice=voice, pitch=pitch) for t in TEXTS], [1.0, 0.8])


def analyse(analyser: AudioAnalyser, tmp_path: Path, samples: np.ndarray) -> dict:
    result = analyser.analyse(known.write_wav(tmp_path / "input.wav", samples))
    for name, document in result["vocal_markers"].items():
        marker = parse(document)  # the shared shape: a value only when assessed, a reason when not
        assert marker.assessed == (marker.value is not None), name
    assert list(result["vocal_markers"]) == list(UNITS)
    return result["vocal_markers"] | {"_result": result}


def test_clipped_speech_withholds_voice_quality_and_flags_intensity(analyser, tmp_path):
    speech = checkin().samples
    markers = analyse(analyser, tmp_path, known.clipped(speech / np.abs(speech).max(), 8.0))
    quality = markers["_result"]["audio_quality"]
    assert quality["clipped_fraction"] > 0.01
    for name in ("jitter", "shimmer", "hnr"):
        assert not markers[name]["assessed"] and markers[name]["reason"].startswith("the recording is clipped ("), name
    assert markers["intensity"]["assessed"] and "clipped" in markers["intensity"]["quality_flags"]
    assert markers["pitch_mean"]["assessed"] and 70 < markers["pitch_mean"]["value"] < 200
    assert markers["pause_count"]["value"] == 2
    assert any("jitter, shimmer and HNR are not measured" in w for w in quality["warnings"])


def test_whispered_speech_has_timing_but_no_voice(analyser, tmp_path):
    markers = analyse(analyser, tmp_path, checkin(voice="en+whisper").samples)
    assert markers["_result"]["speech_detected"] is True
    for name in VOICE + ("speech_rate",):
        assert not markers[name]["assessed"], name
        assert "whispered, very quiet or not a voice" in markers[name]["reason"], name
    assert markers["speaking_fraction"]["assessed"] and markers["speaking_fraction"]["value"] > 30


def test_telephone_speech_is_measured_and_flagged_narrowband(analyser, tmp_path):
    clip = checkin()
    markers = analyse(analyser, tmp_path, known.telephone(clip.samples))
    assert markers["_result"]["audio_quality"]["narrowband"] is True
    for name in ("intensity", "jitter", "shimmer", "hnr"):
        assert markers[name]["assessed"] and "narrowband_audio" in markers[name]["quality_flags"], name
    assert markers["pitch_mean"]["quality_flags"] == [] and 70 < markers["pitch_mean"]["value"] < 200
    assert markers["pause_count"]["value"] == 2
    assert markers["mean_pause_duration"]["value"] == pytest.approx(0.9, abs=0.1)


def test_noisy_speech_is_measured_and_flagged(analyser, tmp_path):
    clip = checkin()
    noisy = known.add_noise(clip.samples, 12.0, np.random.default_rng(2))
    markers = analyse(analyser, tmp_path, noisy)
    assert 5 < markers["_result"]["audio_quality"]["snr_db"] < 20
    assert all("low_snr" in markers[name]["quality_flags"] for name in UNITS if markers[name]["assessed"])
    assert markers["pause_count"]["value"] == 2


@pytest.mark.parametrize("word", ["Yes.", "Fine, thanks."])
def test_under_one_and_a_half_seconds_of_speech_gives_only_what_it_supports(analyser, tmp_path, word):
    markers = analyse(analyser, tmp_path, known.with_pauses([known.speak(word)], [], lead=1.0, tail=1.0).samples)
    speech = markers["_result"]["speech_timing"]["speech_seconds"]
    assert 0 < speech < 1.5
    for name in ("pause_rate", "mean_pause_duration", "speech_rate", "pitch_variability", "jitter", "shimmer", "hnr"):
        assert not markers[name]["assessed"], name
        assert markers[name]["reason"] == (f"only {speech:.1f} s of speech detected; at least 1.5 s is needed "
                                           "for this marker"), name
    for name in ("speaking_fraction", "pause_count", "intensity"):
        assert markers[name]["assessed"], name
    pitch = markers["pitch_mean"]  # a word may hold enough voice for its pitch, or not
    voiced = markers["_result"]["audio_quality"]["voiced_seconds"]
    if voiced >= 0.5:
        assert pitch["assessed"] and "short_speech" in pitch["quality_flags"]
    else:
        assert pitch["reason"] == (f"only {voiced:.1f} s of voiced speech; at least 0.5 s is needed to measure "
                                   "the voice")


def test_two_voices_of_different_pitch_withhold_pitch_and_flag_the_rest(analyser, tmp_path):
    low, high = checkin(voice="en+m3"), checkin(voice="en+f3")
    turns = known.with_pauses([low.samples, high.samples, low.samples[: low.samples.size // 2]], [0.7, 0.7])
    markers = analyse(analyser, tmp_path, turns.samples)
    assert markers["_result"]["audio_quality"]["multiple_speakers_suspected"] is True
    for name in ("pitch_mean", "pitch_variability"):
        assert not markers[name]["assessed"] and markers[name]["reason"].startswith("two voices of clearly"), name
    for name in TIMING + ("intensity", "jitter"):
        assert "multiple_speakers_suspected" in markers[name]["quality_flags"], name


@pytest.mark.parametrize("voice", ["en", "en+f3", "en-us"])
def test_one_voice_is_not_taken_for_two(analyser, tmp_path, voice):
    markers = analyse(analyser, tmp_path, checkin(voice=voice, pitch=70).samples)
    assert markers["_result"]["audio_quality"]["multiple_speakers_suspected"] is False
    assert markers["pitch_mean"]["assessed"]


def test_silence_and_near_silence_invent_nothing(analyser, tmp_path):
    rng = np.random.default_rng(4)
    for samples in (np.zeros(3 * known.RATE, np.float32),
                    known.add_noise(np.zeros(3 * known.RATE, np.float32), 0.0, rng, reference=1e-6)):
        markers = analyse(analyser, tmp_path, samples)
        assert markers["speaking_fraction"]["value"] == 0.0
        assert all(not markers[name]["assessed"] for name in UNITS if name != "speaking_fraction")
