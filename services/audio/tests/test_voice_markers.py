"""Praat's voice measures against signals whose answer is known by construction.

Synthetic vowels (``known_signals.synthetic_vowel``) carry an exact F0, pitch
contour, jitter, shimmer, noise ratio and level; the tolerances are those
bench/audio.py --validity measures over many vowels (docs/clinical-measures.md, "Vocal markers").
"""

from __future__ import annotations

import numpy as np
import pytest

from services.audio import known_signals as known
from services.audio.quality import voice_groups
from services.audio.voice import measure_voice, syllable_nuclei


@pytest.mark.parametrize("f0", [85.0, 120.0, 210.0, 290.0])
def test_pitch_mean_and_variability_of_a_known_vowel(f0):
    vowel = known.synthetic_vowel(f0, 3.0, pitch_sd_semitones=2.0, seed=int(f0))
    voice = measure_voice(vowel.samples)
    assert voice.pitch_mean_hz == pytest.approx(vowel.f0_mean_hz, rel=0.005)
    assert voice.pitch_sd_semitones == pytest.approx(vowel.pitch_sd_semitones, abs=0.1)
    assert voice.voiced_seconds == pytest.approx(3.0, abs=0.1)


def test_a_steady_vowel_has_no_pitch_variability_and_no_jitter_or_shimmer():
    voice = measure_voice(known.synthetic_vowel(120.0, 3.0).samples)
    assert voice.pitch_sd_semitones < 0.02
    assert voice.jitter_percent < 0.05 and voice.shimmer_percent < 0.3
    assert voice.hnr_db > 30


@pytest.mark.parametrize(("jitter", "shimmer"), [(0.004, 0.02), (0.008, 0.05), (0.012, 0.08)])
def test_jitter_and_shimmer_of_a_known_low_voice(jitter, shimmer):
    vowel = known.synthetic_vowel(110.0, 3.0, jitter=jitter, shimmer=shimmer, seed=3)
    voice = measure_voice(vowel.samples)
    assert voice.jitter_percent == pytest.approx(vowel.jitter_percent, abs=0.15)
    # jitter raises the measured shimmer a little (the previous pulse's ringing varies with the period)
    assert voice.shimmer_percent == pytest.approx(vowel.shimmer_percent, abs=2.0)


def test_more_jitter_and_shimmer_measure_higher():
    measured = [measure_voice(known.synthetic_vowel(130.0, 3.0, jitter=j, shimmer=s, seed=5).samples)
                for j, s in ((0.002, 0.01), (0.006, 0.04), (0.015, 0.09))]
    assert [v.jitter_percent for v in measured] == sorted(v.jitter_percent for v in measured)
    assert [v.shimmer_percent for v in measured] == sorted(v.shimmer_percent for v in measured)


@pytest.mark.parametrize("hnr", [6.0, 12.0, 20.0, 28.0])
def test_hnr_of_a_vowel_in_known_noise(hnr):
    vowel = known.synthetic_vowel(140.0, 3.0, hnr_db=hnr, seed=int(hnr))
    assert measure_voice(vowel.samples).hnr_db == pytest.approx(hnr, abs=1.0)


def test_intensity_follows_the_level_in_db():
    loud, quiet = (known.synthetic_vowel(150.0, 2.0, peak=peak) for peak in (0.5, 0.25))
    assert measure_voice(loud.samples).intensity_db == pytest.approx(loud.intensity_db, abs=0.1)
    assert measure_voice(loud.samples).intensity_db - measure_voice(quiet.samples).intensity_db == pytest.approx(
        20 * np.log10(2), abs=0.1)


def test_syllable_nuclei_of_known_sentences():
    import parselmouth

    counted, truth = 0, 0
    for sentence in (known.sentence_of("my brother", "looked at", "the river", "last night"),
                     known.sentence_of("the doctor", "found", "a banana", "after dinner"),
                     known.sentence_of("we", "cleaned", "the window", "together")):
        speech = known.speak(sentence.text, speed=150)
        counted += syllable_nuclei(parselmouth.Sound(speech.astype(np.float64), sampling_frequency=known.RATE))
        truth += sentence.syllables
    assert counted == pytest.approx(truth, rel=0.15)


def test_two_far_apart_pitch_groups_are_two_voices_and_one_voice_is_one():
    one_voice = (80.0, 81.2, 79.1, 82.5, 80.8, 78.9, 81.9)  # semitones re 1 Hz: about 95-120 Hz
    assert voice_groups(one_voice) is None
    two = voice_groups(one_voice + (93.0, 92.1, 94.3))  # a second voice about 12 semitones higher
    assert two is not None and two[0] == pytest.approx(2 ** (80.6 / 12), rel=0.02) and 200 < two[1] < 230
    assert voice_groups(one_voice + (93.0,)) is None  # one high window is not a second speaker
    assert voice_groups(()) is None


@pytest.mark.parametrize("samples", [0, 1, 100, 1500, 4000], ids=lambda n: f"{n}-samples")
@pytest.mark.parametrize("kind", ["silence", "noise"])
def test_too_little_or_no_signal_measures_nothing_and_never_fails(samples, kind):
    signal = (np.zeros(samples, np.float32) if kind == "silence"
              else np.random.default_rng(samples).normal(0, 0.1, samples).astype(np.float32))
    voice = measure_voice(signal)
    assert voice.pitch_mean_hz is None and voice.jitter_percent is None and voice.voiced_seconds < 0.1
    if kind == "silence":
        assert voice.intensity_db is None
