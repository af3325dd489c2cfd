"""The vocal markers of a check-in, each in the shape of ``shared.domain.markers``.

The markers are those the clinical literature validates for schizophrenia:
spoken time, pauses and speech rate (Parola et al. 2020, g -0.75 to -1.89;
Cohen et al. 2014, d = -0.80 for pause-driven speech production) and pitch
variability (g = -0.55, the one that holds across languages), plus the voice
measures clinicians expect beside them (pitch, intensity, jitter, shimmer, HNR).

Every marker has a unit, its method and quality flags (``quality.py``). A marker
is reported as a finding only when

1. its method's validity was measured against known ground truth
   (``VALIDATED``, read from the bench output stored beside this module,
   ``validity.json``, written by ``python -m bench.audio --validity --write``;
   the figures, with their counts, are also in docs/clinical-measures.md), and
2. the recording supports it (enough speech, voicing, no clipping where clipping
   voids it, one voice for pitch).

Otherwise it is ``assessed: false`` with the reason, never a guess.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.audio.quality import AudioQuality
from services.audio.timing import SpeechTiming
from services.audio.voice import VoiceMeasures
from shared.domain.markers import measured, not_assessed

# Less speech than this and rates, variability and voice quality are not computed.
MIN_SPEECH_SECONDS = 1.5
# Less voiced speech than this, or a smaller share of the speech voiced (whispering,
# a very quiet voice), and nothing is measured on the voice. Ordinary speech is
# 55-80 % voiced in bench/audio.py (also at 10 dB SNR), espeak-ng's whisper 0-17 %.
MIN_VOICED_SECONDS = 0.5
MIN_VOICED_SHARE = 0.25
# Values from less speech than this are flagged short_speech: they vary more from one check-in to the next.
SHORT_SPEECH_SECONDS = 5.0

UNITS: Mapping[str, str] = {
    "speaking_fraction": "%",
    "pause_count": "count",
    "pause_rate": "per min",
    "mean_pause_duration": "s",
    "speech_rate": "syllables per min",  # "words per min" when counted from the transcript
    "pitch_mean": "Hz",
    "pitch_variability": "semitones",
    "intensity": "dB",
    "jitter": "%",
    "shimmer": "%",
    "hnr": "dB",
}
WORDS_PER_MIN = "words per min"

_PAUSES = "Silero VAD speech segments; pauses are silences >= 0.25 s between speech"
_PITCH = "Praat To Pitch (ac), two-pass range (Hirst 2011)"
METHODS: Mapping[str, str] = {
    "speaking_fraction": "Silero VAD speech time / recording time",
    "pause_count": _PAUSES,
    "pause_rate": _PAUSES + ", per minute of speaking time (first to last speech)",
    "mean_pause_duration": _PAUSES + ", mean duration",
    "speech_rate": "syllable nuclei (de Jong & Wempe 2009, Praat) per minute of speaking time (first to last speech)",
    "pitch_mean": _PITCH + ", mean of voiced frames",
    "pitch_variability": _PITCH + ", standard deviation of voiced frames in semitones",
    "intensity": "Praat To Intensity, energy mean over speech, dB re the recording's full scale (not calibrated SPL)",
    "jitter": "Praat jitter (local), pulses from To PointProcess (cc)",
    "shimmer": "Praat shimmer (local), pulses from To PointProcess (cc)",
    "hnr": "Praat To Harmonicity (cc), mean of voiced frames",
}
WORDS_METHOD = "transcript words per minute of speaking time (first to last speech)"

# The stored output of `python -m bench.audio --validity --write`: each marker's errors
# against a truth known by construction, per recording condition.
VALIDITY_FILE = Path(__file__).with_name("validity.json")
# A marker's method is valid when, in every condition the bench ran, it measured at least
# this share of the known signals and its values follow the truth this closely (Pearson r).
MIN_MEASURED_SHARE = 0.95
MIN_CORRELATION = 0.6  # shimmer, the weakest, reads 0.65-0.87 (docs/clinical-measures.md, "Vocal markers")


def validated_markers(report: Mapping[str, Any]) -> frozenset[str]:
    """The markers a bench validity output shows measuring their known truth."""
    passed = set()
    for name in UNITS:
        rows = report.get("markers", {}).get(name) or {}
        if rows and all(row["n"] > 0 and row["measured"] >= MIN_MEASURED_SHARE * row["n"]
                        and row.get("r", 0.0) >= MIN_CORRELATION for row in rows.values()):
            passed.add(name)
    return frozenset(passed)


def load_validity(path: Path = VALIDITY_FILE) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


# Markers whose method's validity was measured: what the stored bench output shows, nothing more.
VALIDATED: frozenset[str] = validated_markers(load_validity())

# Which recording conditions weaken which markers (see quality.py).
_TIMING = ("speaking_fraction", "pause_count", "pause_rate", "mean_pause_duration")
_FLAGS: Mapping[str, tuple[str, ...]] = {
    "low_snr": tuple(UNITS),
    "multiple_speakers_suspected": tuple(UNITS),
    "clipped": ("intensity", "speech_rate"),
    "narrowband_audio": ("intensity", "jitter", "shimmer", "hnr"),
}
_NEEDS_SPEECH = ("pause_rate", "mean_pause_duration", "speech_rate", "pitch_variability", "jitter", "shimmer", "hnr")
_NEEDS_VOICE = ("pitch_mean", "pitch_variability", "jitter", "shimmer", "hnr")
_VOIDED_BY_CLIPPING = ("jitter", "shimmer", "hnr")
_VOIDED_BY_TWO_VOICES = ("pitch_mean", "pitch_variability")


def vocal_markers(
    timing: SpeechTiming,
    voice: VoiceMeasures | None,
    quality: AudioQuality,
    transcript_words: int | None = None,
) -> dict[str, dict]:
    """All markers of ``UNITS``, measured or not assessed (with the reason).

    ``transcript_words``: the number of words the transcript recognised, when the
    transcript is enabled; speech rate is then words per minute.
    """
    speech = timing.speech_seconds
    span_minutes = timing.span_seconds / 60
    pauses = timing.pauses
    voiced = voice.voiced_seconds if voice else 0.0
    words_rate = transcript_words is not None and transcript_words > 0
    values: dict[str, float | None] = {
        "speaking_fraction": 100 * speech / timing.recording_seconds if timing.recording_seconds > 0 else None,
        "pause_count": float(len(pauses)),
        "pause_rate": len(pauses) / span_minutes if span_minutes > 0 else None,
        "mean_pause_duration": sum(pauses) / len(pauses) if pauses else None,
        "speech_rate": (transcript_words / span_minutes if words_rate else
                        voice.syllables / span_minutes if voice and voice.syllables is not None and span_minutes > 0
                        else None),
        "pitch_mean": voice.pitch_mean_hz if voice else None,
        "pitch_variability": voice.pitch_sd_semitones if voice else None,
        "intensity": voice.intensity_db if voice else None,
        "jitter": voice.jitter_percent if voice else None,
        "shimmer": voice.shimmer_percent if voice else None,
        "hnr": voice.hnr_db if voice else None,
    }
    conditions = {"low_snr": quality.low_snr, "multiple_speakers_suspected": quality.two_voices,
                  "clipped": quality.clipped, "narrowband_audio": bool(quality.narrowband)}

    markers = {}
    for name, unit in UNITS.items():
        method = METHODS[name]
        if name == "speech_rate" and words_rate:
            unit, method = WORDS_PER_MIN, WORDS_METHOD
        reason = _why_not(name, values[name], timing, speech, voiced, quality, words_rate)
        if reason:
            markers[name] = not_assessed(unit, method, reason)
            continue
        flags = [flag for flag, present in conditions.items() if present and name in _FLAGS[flag]]
        if speech < SHORT_SPEECH_SECONDS and name != "speaking_fraction":
            flags.append("short_speech")
        markers[name] = measured(round(float(values[name]), _DECIMALS.get(name, 2)), unit, method, flags)
    return markers


_DECIMALS = {"pause_count": 0, "jitter": 3, "shimmer": 3, "mean_pause_duration": 3}


def _why_not(name: str, value: float | None, timing: SpeechTiming, speech: float, voiced: float,
             quality: AudioQuality, words_rate: bool) -> str | None:
    if name not in VALIDATED:
        return "this marker's method has no measured validity yet"
    if timing.recording_seconds <= 0:
        return "the recording is empty"
    if name != "speaking_fraction" and speech <= 0:
        return f"no speech detected in {timing.recording_seconds:.1f} s of audio"
    if name in _NEEDS_SPEECH and speech < MIN_SPEECH_SECONDS:
        return (f"only {speech:.1f} s of speech detected; at least {MIN_SPEECH_SECONDS:.1f} s is needed "
                "for this marker")
    needs_voice = name in _NEEDS_VOICE or (name == "speech_rate" and not words_rate)
    if needs_voice and voiced < MIN_VOICED_SHARE * speech:
        return (f"too little voiced speech to measure the voice ({voiced:.1f} s of {speech:.1f} s voiced): the "
                "speech was whispered, very quiet or not a voice")
    if needs_voice and voiced < MIN_VOICED_SECONDS:
        return (f"only {voiced:.1f} s of voiced speech; at least {MIN_VOICED_SECONDS:.1f} s is needed to measure "
                "the voice")
    if name in _VOIDED_BY_CLIPPING and quality.clipped:
        return f"the recording is clipped ({100 * quality.clipped_fraction:.1f} % of speech samples at full scale)"
    if name in _VOIDED_BY_TWO_VOICES and quality.two_voices:
        low, high = quality.voice_groups_hz
        return (f"two voices of clearly different pitch were heard (around {low:.0f} and {high:.0f} Hz); "
                "the patient's own pitch cannot be told apart")
    if value is None:
        if name == "mean_pause_duration":
            return "there were no pauses (silences of 0.25 s or more between speech)"
        return "Praat could not measure it on this speech (too few regular voice periods)"
    return None
