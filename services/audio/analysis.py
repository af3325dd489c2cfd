"""Audio analysis of a check-in: speech activity, vocal markers and a prosodic emotion estimate.

Pure analysis code (no queues, no storage), so the same ``AudioAnalyser`` runs in
the audio worker, a benchmark or a notebook. Models are loaded once in
``__init__``; ``analyse`` is synchronous and CPU-bound.

Pipeline of ``analyse(wav)``:

1. Read the WAV (16 kHz mono PCM expected; other rates are resampled and
   channels averaged).
2. Silero VAD (``vad.py``) finds speech segments. Segments closer than
   ``MIN_PAUSE_SECONDS`` are joined into one stretch of speech; the gaps between
   the stretches are the pauses.
3. openSMILE eGeMAPSv02 functionals are computed on the speech only (the speech
   stretches concatenated), so that leading/trailing silence and pauses do not
   dilute loudness or voicing rates. Pitch, jitter, shimmer and HNR are measured
   on voiced frames only by eGeMAPS itself.
4. An emotion label is derived from prosody by documented rules
   (``prosody_emotion``): a heuristic, see its docstring.

Speed: about 0.01 s of CPU per second of audio (openSMILE ~0.01, VAD ~0.002).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import soundfile

from services.audio.vad import SAMPLE_RATE, Segment, SileroVad, speech_segments
from shared.errors import InputError

# A silence between speech segments counts as a pause from this length on
# (Goldman-Eisler's 250 ms convention, which leaves out stop closures and
# other silences inside words). Shorter gaps count as speaking time.
MIN_PAUSE_SECONDS = 0.25
# Prosodic functionals over less speech than this are too noisy to read an emotion from.
MIN_SPEECH_SECONDS_FOR_EMOTION = 1.5

EMOTION_METHOD = "prosody_rules_v1"
EMOTION_BACKENDS = ("prosody_rules",)
EMOTIONS = ("neutral", "calm", "sad", "anxious", "happy", "angry")

ProgressCallback = Callable[[float, str], None]


class AudioAnalyser:
    """Speech activity, vocal markers and a prosody-based emotion estimate for one WAV file.

    Load once, call ``analyse`` for each file. Calls are serialised by a lock, so
    sharing one instance between threads is safe (one analysis at a time).
    """

    def __init__(self, vad_model_path: Path, *, emotion_backend: str = "prosody_rules") -> None:
        if emotion_backend not in EMOTION_BACKENDS:
            supported = ", ".join(EMOTION_BACKENDS)
            raise ValueError(f"unknown emotion backend {emotion_backend!r} (supported: {supported})")
        self.emotion_backend = emotion_backend
        self._vad = SileroVad(Path(vad_model_path))  # raises ModelUnavailable("AUDIO_VAD_MODEL_PATH", ...)

        import opensmile

        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.models = {"vad": self._vad.name, "features": f"opensmile {opensmile.__version__} eGeMAPSv02"}
        self._lock = threading.Lock()

    def analyse(self, wav_path: Path, on_progress: ProgressCallback | None = None) -> dict:
        """Analyse one 16 kHz mono WAV file; returns a JSON-serialisable dict.

        Raises ``InputError`` when the file cannot be decoded as audio and
        ``FileNotFoundError`` when it does not exist (a caller's bug, not the input's).
        """
        progress = on_progress or (lambda fraction, message: None)
        with self._lock:
            progress(0.0, "reading audio")
            audio = read_audio(Path(wav_path))
            duration = audio.size / SAMPLE_RATE

            progress(0.1, "detecting speech")
            probs = self._vad.speech_probabilities(audio)
            stretches = join_segments(speech_segments(probs, audio.size), MIN_PAUSE_SECONDS)
            timing = timing_markers(stretches)

            features: dict[str, float] = {}
            if stretches:
                progress(0.5, "measuring vocal features")
                speech = np.concatenate(
                    [audio[round(s.start * SAMPLE_RATE) : round(s.end * SAMPLE_RATE)] for s in stretches]
                )
                row = self._smile.process_signal(speech, SAMPLE_RATE).iloc[0]
                features = {str(k): float(v) for k, v in row.items()}

            progress(0.9, "estimating emotion from prosody")
            markers = vocal_markers(timing, features)
            emotion = prosody_emotion(markers, duration)

            result = {
                "audio_emotion": emotion,
                "vocal_markers": markers,
                "speech_detected": bool(stretches),
                "duration_seconds": round(duration, 3),
                "models": dict(self.models),
            }
            progress(1.0, "audio analysed")
            return result


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz; ``InputError`` when the file is not decodable audio."""
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)  # libsndfile's reason, without the path
        raise InputError(f"the audio track could not be read: it is not a valid WAV file ({detail})") from exc
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    audio = np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)
    if rate != SAMPLE_RATE and audio.size:
        import audresample  # installed with opensmile

        audio = audresample.resample(audio, rate, SAMPLE_RATE)[0]
    return np.ascontiguousarray(audio, dtype=np.float32)


def join_segments(segments: list[Segment], min_gap: float) -> list[Segment]:
    """Join VAD segments separated by less than ``min_gap`` seconds into stretches of speech."""
    joined: list[Segment] = []
    for seg in segments:
        if joined and seg.start - joined[-1].end < min_gap:
            joined[-1] = Segment(joined[-1].start, seg.end)
        else:
            joined.append(seg)
    return joined


def timing_markers(stretches: list[Segment]) -> dict[str, float | int | None]:
    """Speaking time and pauses. Pauses are the gaps between stretches of speech.

    ``pause_ratio`` is pause time over speaking time *including* the pauses
    (first speech onset to last speech offset), so silence before the person
    starts or after they stop does not count; that lead-in is reported as
    ``speech_onset_seconds``.
    """
    speech = sum((s.duration for s in stretches), 0.0)
    pauses = [b.start - a.end for a, b in zip(stretches, stretches[1:])]
    span = stretches[-1].end - stretches[0].start if stretches else 0.0
    return {
        "speech_seconds": speech,
        "speech_segments": len(stretches),
        "pause_count": len(pauses),
        "pause_seconds": sum(pauses, 0.0),
        "mean_pause_seconds": sum(pauses) / len(pauses) if pauses else None,  # undefined without pauses
        "longest_pause_seconds": max(pauses) if pauses else None,
        "pause_ratio": sum(pauses) / span if span > 0 else None,
        "speech_onset_seconds": stretches[0].start if stretches else None,
    }


_F0_MEAN = "F0semitoneFrom27.5Hz_sma3nz_amean"
_F0_SDNORM = "F0semitoneFrom27.5Hz_sma3nz_stddevNorm"

# name -> unit; the order is the output order.
MARKER_UNITS: Mapping[str, str] = {
    "speech_seconds": "s",
    "speech_segments": "count (stretches of speech between pauses)",
    "pause_count": "count (silences >= 0.25 s between speech)",
    "pause_seconds": "s",
    "mean_pause_seconds": "s",
    "longest_pause_seconds": "s",
    "pause_ratio": "fraction of speaking time (first onset to last offset) spent in pauses",
    "speech_onset_seconds": "s from start of audio to first speech",
    "speech_rate": "voiced segments per second of speech (openSMILE VoicedSegmentsPerSec, syllable-rate proxy)",
    "loudness_peak_rate": "loudness peaks per second of speech (openSMILE loudnessPeaksPerSec)",
    "f0_mean_semitones": "semitones above 27.5 Hz (mean over voiced frames)",
    "f0_mean_hz": "Hz (f0_mean_semitones converted)",
    "f0_variability": "semitones (standard deviation of F0 over voiced frames)",
    "jitter": "ratio (mean local jitter, period-to-period F0 perturbation)",
    "shimmer": "dB (mean local shimmer)",
    "hnr_db": "dB (harmonics-to-noise ratio)",
    "loudness_mean": "openSMILE loudness (auditory-spectrum sum; relative, depends on recording level)",
    "loudness_variability": "coefficient of variation of loudness (std / mean)",
}

_DECIMALS = {"jitter": 5}


def vocal_markers(timing: Mapping[str, float | int | None], features: Mapping[str, float]) -> dict[str, dict]:
    """Markers with units; ``None`` where undefined (no speech, or no voiced frames)."""

    def feat(name: str) -> float | None:
        value = features.get(name)
        return value if value is not None and math.isfinite(value) else None

    f0_mean = feat(_F0_MEAN)
    voiced = f0_mean is not None and f0_mean > 0  # eGeMAPS writes 0 when no frame was voiced
    f0_sd_norm = feat(_F0_SDNORM)

    def voiced_only(value: float | None) -> float | None:
        return value if voiced else None

    values: dict[str, float | int | None] = dict(timing)
    values.update(
        {
            "speech_rate": feat("VoicedSegmentsPerSec"),
            "loudness_peak_rate": feat("loudnessPeaksPerSec"),
            "f0_mean_semitones": voiced_only(f0_mean),
            "f0_mean_hz": 27.5 * 2 ** (f0_mean / 12) if voiced else None,
            "f0_variability": f0_mean * f0_sd_norm if voiced and f0_sd_norm is not None else None,
            "jitter": voiced_only(feat("jitterLocal_sma3nz_amean")),
            "shimmer": voiced_only(feat("shimmerLocaldB_sma3nz_amean")),
            "hnr_db": voiced_only(feat("HNRdBACF_sma3nz_amean")),
            "loudness_mean": feat("loudness_sma3_amean"),
            "loudness_variability": feat("loudness_sma3_stddevNorm"),
        }
    )
    return {
        name: {"value": _round(values.get(name), _DECIMALS.get(name, 3)), "unit": unit}
        for name, unit in MARKER_UNITS.items()
    }


# --- emotion from prosody -------------------------------------------------------------

# Each cue is standardised as z = (value - centre) / scale and clipped to +-2.5.
# Centres are typical values for conversational adult speech: F0 standard
# deviation 2-4 semitones, pauses ~15 % of speaking time; loudness, loudness CV
# and voiced-segment rate are openSMILE eGeMAPS values for ordinary speech at a
# normal recording level. They are reasonable defaults, NOT norms fitted to
# patients or to this product's recordings.
CUES: Mapping[str, tuple[str, float, float]] = {
    # cue: (marker, centre, scale)
    "loudness": ("loudness_mean", 0.8, 0.4),
    "loudness_var": ("loudness_variability", 0.70, 0.15),
    "pitch_var": ("f0_variability", 3.0, 1.0),
    "rate": ("speech_rate", 3.0, 0.7),
    "pauses": ("pause_ratio", 0.15, 0.10),
}
Z_CLIP = 2.5
# A short answer without a pause says nothing about pausing: the pause cue is
# used only when the speaking span (speech + pauses) is at least this long.
MIN_SPAN_SECONDS_FOR_PAUSE_CUE = 5.0

# Score of each label = weighted mean of the cue z-scores. Directions follow the
# cue profiles in Juslin & Laukka (2003), "Communication of emotions in vocal
# expression and music performance", Psychological Bulletin 129(5), 770-814:
#   angry   - loud, large loudness swings, fast, high pitch variability;
#   happy   - high pitch variability, fast, moderately loud;
#   anxious - fast with restricted pitch variability (fear);
#   sad     - quiet, slow, flat pitch and loudness, many pauses;
#   calm    - soft and slowish but fluent (few pauses), as "tenderness".
# Loudness level has a small weight because it depends on the microphone.
RULE_WEIGHTS: Mapping[str, Mapping[str, float]] = {
    "angry": {"loudness": 1.0, "loudness_var": 1.0, "pitch_var": 0.5, "rate": 0.75, "pauses": -0.25},
    "happy": {"loudness": 0.5, "loudness_var": 0.5, "pitch_var": 1.0, "rate": 0.75, "pauses": -0.25},
    "anxious": {"pitch_var": -0.75, "rate": 1.0, "pauses": -0.25},
    "sad": {"loudness": -0.75, "loudness_var": -0.5, "pitch_var": -1.0, "rate": -1.0, "pauses": 1.0},
    "calm": {"loudness": -0.5, "loudness_var": -0.25, "pitch_var": -0.25, "rate": -0.5, "pauses": -0.5},
}
# "neutral" scores NEUTRAL_PRIOR minus the mean |z|: it wins when every cue is typical.
NEUTRAL_PRIOR = 0.5
# Softmax temperature: with all cues typical, neutral gets ~0.35 and each other label ~0.13.
TEMPERATURE = 0.5


def prosody_cues(markers: Mapping[str, Mapping]) -> dict[str, float]:
    """Clipped z-scores of the cues that could be measured (missing cues are left out)."""
    span = (markers["speech_seconds"]["value"] or 0.0) + (markers["pause_seconds"]["value"] or 0.0)
    cues = {}
    for cue, (marker, centre, scale) in CUES.items():
        value = markers[marker]["value"]
        if cue == "pauses" and span < MIN_SPAN_SECONDS_FOR_PAUSE_CUE:
            continue
        if value is not None:
            cues[cue] = max(-Z_CLIP, min(Z_CLIP, (value - centre) / scale))
    return cues


def prosody_emotion(markers: Mapping[str, Mapping], duration_seconds: float) -> dict:
    """Emotion label from prosodic cues: a documented HEURISTIC, not a trained classifier.

    No speech-emotion model with trustworthy weights is available offline, so
    the label is read from five prosodic cues (loudness, loudness variability,
    F0 variability in semitones, voiced-segment rate, pause ratio) with the rule
    weights in ``RULE_WEIGHTS`` and a softmax (``TEMPERATURE``) over the rule
    scores. Prosody mostly carries arousal; valence (happy vs angry, calm vs
    sad) is weakly determined by it, and blunted prosody, medication or a quiet
    microphone look like "sad"/"calm". The confidences are the softmax of rule
    scores, not calibrated probabilities. Read the output as "the voice
    sounded ...", never as a diagnosis of mood.

    Not assessed (no label, ``assessed`` False, ``reason`` set) when no speech
    was detected or there is less than ``MIN_SPEECH_SECONDS_FOR_EMOTION`` of it.
    """
    speech = markers["speech_seconds"]["value"] or 0.0
    if speech <= 0:
        return _not_assessed(f"no speech detected in {duration_seconds:.1f} s of audio")
    if speech < MIN_SPEECH_SECONDS_FOR_EMOTION:
        return _not_assessed(
            f"only {speech:.1f} s of speech detected; at least {MIN_SPEECH_SECONDS_FOR_EMOTION:.1f} s "
            "is needed to estimate emotion from prosody"
        )
    cues = prosody_cues(markers)
    if not cues:
        return _not_assessed("no prosodic features could be measured from the speech")

    scores = {label: _rule_score(weights, cues) for label, weights in RULE_WEIGHTS.items()}
    scores["neutral"] = NEUTRAL_PRIOR - sum(abs(z) for z in cues.values()) / len(cues)
    top = max(scores.values())
    exp = {label: math.exp((score - top) / TEMPERATURE) for label, score in scores.items()}
    total = sum(exp.values())
    ranked = sorted(
        ((label, value / total) for label, value in exp.items()),
        key=lambda item: (-item[1], EMOTIONS.index(item[0])),
    )
    return {
        "primary_emotion": ranked[0][0],
        "confidence": round(ranked[0][1], 3),
        "all_emotions": [{"emotion": label, "confidence": round(p, 3)} for label, p in ranked],
        "method": EMOTION_METHOD,
        "assessed": True,
        "reason": None,
    }


def _rule_score(weights: Mapping[str, float], cues: Mapping[str, float]) -> float:
    """Weighted mean of the measured cues' z-scores (0 when none of the rule's cues was measured)."""
    used = [(w, cues[c]) for c, w in weights.items() if c in cues]
    return sum(w * z for w, z in used) / sum(abs(w) for w, _ in used) if used else 0.0


def _not_assessed(reason: str) -> dict:
    return {
        "primary_emotion": None,
        "confidence": None,
        "all_emotions": [],
        "method": EMOTION_METHOD,
        "assessed": False,
        "reason": reason,
    }


def _round(value: float | int | None, decimals: int) -> float | int | None:
    if value is None or isinstance(value, int):
        return value
    value = float(value)
    return round(value, decimals) if math.isfinite(value) else None
