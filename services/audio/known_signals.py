"""Signals whose vocal markers are known exactly, for the tests and ``bench/audio.py``.

A synthetic sustained vowel /a/ is built pulse by pulse, so its ground truth is
known by construction rather than by another analyser:

- each glottal pulse excites three formant resonances (700, 1220, 2600 Hz, the
  vowel /a/ of Peterson & Barney 1952), evaluated in continuous time at the
  pulse's exact instant, so there is no rounding to the sample grid (that alone
  would add about 0.4 % jitter at 16 kHz);
- pitch follows a slow sinusoidal contour whose standard deviation in semitones
  is chosen; each period is perturbed at random (jitter) and each pulse's
  amplitude too (shimmer); the truth is computed from the periods and amplitudes
  actually drawn, with Praat's definitions (mean absolute difference of
  consecutive periods, or amplitudes, over their mean);
- white noise at a chosen harmonics-to-noise ratio (power of the vowel over the
  power of the noise) is added;
- intensity is the signal's mean power in dB re (2e-5)^2, Praat's convention for
  samples read as pascals.

Speech with known timing comes from espeak-ng: sentences assembled from phrases
whose syllables and words are counted by hand (``PHRASES``), each utterance
trimmed of espeak's own leading and trailing silence, joined by silences of known
length. The degradations a phone recording suffers (noise, a telephone line,
clipping) are applied with numpy and Praat's resampler.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

RATE = 16_000
FORMANTS = ((700.0, 80.0, 1.0), (1220.0, 90.0, 0.5), (2600.0, 120.0, 0.25))  # (Hz, bandwidth Hz, weight)
_PULSE_SECONDS = 0.03  # a formant ringing with 80 Hz bandwidth has decayed by 99 % after this
_CONTOUR_HZ = 0.5  # the pitch contour's rate: one rise and fall every 2 s


@dataclass(frozen=True)
class KnownVowel:
    samples: np.ndarray  # float32, RATE
    f0_mean_hz: float
    pitch_sd_semitones: float
    jitter_percent: float
    shimmer_percent: float
    hnr_db: float | None  # None: no noise added
    intensity_db: float


def synthetic_vowel(
    f0: float,
    seconds: float = 2.0,
    *,
    jitter: float = 0.0,
    shimmer: float = 0.0,
    pitch_sd_semitones: float = 0.0,
    hnr_db: float | None = None,
    peak: float = 0.5,
    seed: int = 0,
) -> KnownVowel:
    """A vowel with mean pitch ``f0`` Hz; ``jitter`` and ``shimmer`` are the standard deviations of
    the relative period and amplitude perturbations (the measured truth is returned)."""
    rng = np.random.default_rng(seed)
    depth = pitch_sd_semitones * math.sqrt(2)  # a sine's standard deviation is its amplitude / sqrt(2)

    def contour(t: np.ndarray | float) -> np.ndarray | float:
        return f0 * 2 ** (depth * np.sin(2 * np.pi * _CONTOUR_HZ * t) / 12)

    onsets, periods = [], []
    t = 0.0
    while t < seconds:
        period = (1.0 / contour(t)) * (1.0 + jitter * rng.standard_normal())
        onsets.append(t)
        periods.append(period)
        t += period
    onsets_a, periods_a = np.array(onsets), np.array(periods)
    amplitudes = np.clip(1.0 + shimmer * rng.standard_normal(onsets_a.size), 0.05, None)

    n = int(round(seconds * RATE))
    signal = _pulse_train(onsets_a, amplitudes, n)
    signal *= peak / np.abs(signal).max()

    noise_db = None
    if hnr_db is not None:
        noise = rng.standard_normal(n) * math.sqrt(np.mean(signal**2) / 10 ** (hnr_db / 10))
        noise_db = hnr_db
        signal = signal + noise

    # Truth over the pulses that start inside the signal, by Praat's definitions.
    inside = onsets_a + periods_a <= seconds
    p, a = periods_a[inside], amplitudes[inside]
    frames = np.arange(0.0, seconds, 0.01)
    index = np.clip(np.searchsorted(onsets_a, frames, side="right") - 1, 0, onsets_a.size - 1)
    f0_frames = 1.0 / periods_a[index]
    return KnownVowel(
        samples=signal.astype(np.float32),
        f0_mean_hz=float(f0_frames.mean()),
        pitch_sd_semitones=float(np.std(12 * np.log2(contour(frames)), ddof=1)),
        jitter_percent=float(100 * np.mean(np.abs(np.diff(p))) / np.mean(p)),
        shimmer_percent=float(100 * np.mean(np.abs(np.diff(a))) / np.mean(a)),
        hnr_db=noise_db,
        intensity_db=float(10 * math.log10(np.mean(signal.astype(np.float64) ** 2) / 4e-10)),
    )


def _pulse_train(onsets: np.ndarray, amplitudes: np.ndarray, n: int) -> np.ndarray:
    """`n` samples of glottal pulses, one per onset (seconds) with its amplitude."""
    width = int(_PULSE_SECONDS * RATE) + 1
    signal = np.zeros(n + width)
    for onset, amplitude in zip(onsets, amplitudes):
        first = math.ceil(onset * RATE)
        if first >= n:
            break
        tau = np.arange(first, first + width) / RATE - onset  # exact time since the pulse
        signal[first:first + width] += amplitude * _pulse_response(tau)
    return signal[:n]


def _pulse_response(tau: np.ndarray) -> np.ndarray:
    out = np.zeros_like(tau)
    for freq, bandwidth, weight in FORMANTS:
        out += weight * np.exp(-np.pi * bandwidth * tau) * np.sin(2 * np.pi * freq * tau)
    return out


# --- speech with known syllables, words and pauses ------------------------------------

# (text, syllables, words). Words with an ambiguous syllable count ("family",
# "every", "fire", "tired") are left out.
PHRASES: dict[str, tuple[tuple[str, int, int], ...]] = {
    "subject": (("I", 1, 1), ("my sister", 3, 2), ("the doctor", 3, 2), ("my brother", 3, 2),
                ("the children", 3, 2), ("the neighbour", 3, 2), ("my mother", 3, 2), ("we", 1, 1)),
    "verb": (("took", 1, 1), ("visited", 3, 1), ("walked to", 2, 2), ("talked about", 3, 2), ("cleaned", 1, 1),
             ("looked at", 2, 2), ("remembered", 3, 1), ("painted", 2, 1), ("found", 1, 1)),
    "object": (("the garden", 3, 2), ("my medication", 5, 2), ("the hospital", 4, 2), ("a banana", 4, 2),
               ("the television", 5, 2), ("the river", 3, 2), ("the kitchen", 3, 2), ("the window", 3, 2),
               ("a little dog", 4, 3), ("the computer", 4, 2)),
    "time": (("today", 2, 1), ("yesterday", 3, 1), ("this morning", 3, 2), ("on Sunday", 3, 2),
             ("in the afternoon", 5, 3), ("after dinner", 4, 2), ("last night", 2, 2), ("together", 3, 1)),
}


@dataclass(frozen=True)
class KnownSentence:
    text: str
    syllables: int
    words: int


def sentence_of(subject: str, verb: str, obj: str, time: str) -> KnownSentence:
    """A chosen sentence, its syllables and words counted from ``PHRASES`` (the one table of truths)."""
    parts = [next(p for p in PHRASES[slot] if p[0] == text)
             for slot, text in (("subject", subject), ("verb", verb), ("object", obj), ("time", time))]
    return KnownSentence(" ".join(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))


def known_sentence(rng: np.random.Generator) -> KnownSentence:
    parts = [PHRASES[slot][rng.integers(len(PHRASES[slot]))] for slot in ("subject", "verb", "object", "time")]
    return KnownSentence(" ".join(p[0] for p in parts), sum(p[1] for p in parts), sum(p[2] for p in parts))


def speak(text: str, *, voice: str = "en", speed: int = 160, pitch: int = 50, trim_db: float = -45.0) -> np.ndarray:
    """espeak-ng speech as RATE mono float32, trimmed where it is more than ``trim_db`` below its peak."""
    with tempfile.TemporaryDirectory(prefix="espeak-") as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), text],
                       check=True, capture_output=True)
        samples, rate = soundfile.read(str(wav), dtype="float64")
    samples = resample(samples, rate, RATE)
    loud = np.flatnonzero(np.abs(samples) > np.abs(samples).max() * 10 ** (trim_db / 20))
    return samples[loud[0]: loud[-1] + 1].astype(np.float32) if loud.size else samples[:0].astype(np.float32)


@dataclass(frozen=True)
class KnownSpeech:
    samples: np.ndarray
    speech_seconds: float
    pauses: tuple[float, ...]
    span_seconds: float
    syllables: int
    words: int

    @property
    def seconds(self) -> float:
        return self.samples.size / RATE


def with_pauses(utterances: list[np.ndarray], pauses: list[float], *, lead: float = 0.5, tail: float = 0.5,
                syllables: int = 0, words: int = 0) -> KnownSpeech:
    """Utterances joined by silences of the given lengths, with silence before and after."""
    if len(pauses) != len(utterances) - 1:
        raise ValueError("one pause between each two utterances")
    parts = [np.zeros(int(lead * RATE), np.float32)]
    for i, utterance in enumerate(utterances):
        parts.append(utterance)
        if i < len(pauses):
            parts.append(np.zeros(int(round(pauses[i] * RATE)), np.float32))
    parts.append(np.zeros(int(tail * RATE), np.float32))
    speech = sum(u.size for u in utterances) / RATE
    exact_pauses = tuple(int(round(p * RATE)) / RATE for p in pauses)
    return KnownSpeech(np.concatenate(parts), speech, exact_pauses, speech + sum(exact_pauses), syllables, words)


def add_noise(samples: np.ndarray, snr_db: float, rng: np.random.Generator, reference: float | None = None) -> np.ndarray:
    """White noise ``snr_db`` below ``reference`` power (default: the signal's mean power where it is not silent)."""
    if reference is None:
        active = samples[np.abs(samples) > 1e-4]
        reference = float(np.mean(active.astype(np.float64) ** 2)) if active.size else 1e-6
    noise = rng.standard_normal(samples.size) * math.sqrt(reference / 10 ** (snr_db / 10))
    return (samples + noise).astype(np.float32)


def telephone(samples: np.ndarray) -> np.ndarray:
    """A telephone line: 8 kHz sampling (Praat's anti-aliasing resampler) and G.711 mu-law, back at RATE."""
    narrow = resample(samples, RATE, 8000)
    mu = 255.0
    coded = np.sign(narrow) * np.log1p(mu * np.minimum(np.abs(narrow), 1.0)) / np.log1p(mu)
    quantised = np.round(coded * 127) / 127
    decoded = np.sign(quantised) * np.expm1(np.abs(quantised) * np.log1p(mu)) / mu
    return resample(decoded, 8000, RATE).astype(np.float32)


def clipped(samples: np.ndarray, gain: float) -> np.ndarray:
    """Amplified by ``gain`` and clipped at full scale, as an overdriven phone microphone does."""
    return np.clip(samples * gain, -1.0, 1.0).astype(np.float32)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return np.asarray(samples, dtype=np.float64)
    from services.audio.audio_file import resample as praat_resample

    return praat_resample(samples, rate, target)


def write_wav(path: Path, samples: np.ndarray) -> Path:
    soundfile.write(str(path), np.asarray(samples, dtype=np.float32), RATE, subtype="PCM_16")
    return path
