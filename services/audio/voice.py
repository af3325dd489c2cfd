"""The voice measured with Praat's algorithms (parselmouth): pitch, intensity, jitter,
shimmer, harmonics-to-noise ratio and syllable nuclei.

Praat is the reference implementation of the clinical speech literature; the
calls and parameters below are Praat's documented defaults unless a comment
says otherwise. Everything runs on the speech only (the VAD's stretches
concatenated), so silences before, between and after do not dilute the values.

- **Pitch** (``To Pitch (ac)``, 10 ms steps), in two passes (Hirst 2011): a first
  pass between 60 and 600 Hz (adult speaking voices), then the floor and ceiling set to 0.75 x the first
  quartile and 1.5 x the third quartile of that pass, which removes most octave
  jumps for low and high voices alike. Mean in Hz and standard deviation in
  semitones over the voiced frames.
- **Intensity** (``To Intensity``, minimum pitch = the pitch floor), mean over
  the speech in energy, in dB re (2e-5)^2 of the sample scale: relative to the
  recording level, not a calibrated sound pressure level.
- **Jitter (local)** and **shimmer (local)** on the glottal pulses of
  ``To PointProcess (cc)`` (guided by the pitch above), with Praat's voice-report
  defaults: periods 0.1-20 ms, maximum period factor 1.3, maximum amplitude
  factor 1.6. In %.
- **HNR** (``To Harmonicity (cc)``, 10 ms, one period per window), mean over the
  voiced frames, in dB.
- **Syllable nuclei** (de Jong & Wempe 2009, "Praat script to detect syllable
  nuclei and measure speech rate automatically", Behavior Research Methods 41:
  385-390): intensity peaks above (99th percentile - 25 dB), followed by a dip
  of more than 2 dB, at voiced instants. The published script never counts the
  last peak; here it counts when its own dip to the end exceeds 2 dB as well.

Jitter, shimmer and HNR cost about 40 ms per second of speech on one core, so on
long recordings they are measured on ``MAX_SAMPLE_SECONDS`` of speech taken
evenly across it (so is the first pitch pass, which only sets the range).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from services.audio.vad import SAMPLE_RATE

PITCH_STEP = 0.01
MIN_SECONDS = 0.1  # Praat's pitch analysis needs three periods of the 60 Hz floor (0.05 s), and some margin
FIRST_PASS_FLOOR, FIRST_PASS_CEILING = 60.0, 600.0
MAX_SAMPLE_SECONDS = 30.0
_QUALITY_PIECES = 6
# Syllable nuclei (de Jong & Wempe 2009 defaults)
SILENCE_DB = -25.0
MIN_DIP_DB = 2.0
# The speaker check takes the median pitch of each window of this much speech.
SPEAKER_WINDOW_SECONDS = 1.0
_MIN_VOICED_PER_WINDOW = 0.3


@dataclass(frozen=True)
class VoiceMeasures:
    voiced_seconds: float
    pitch_floor_hz: float | None
    pitch_ceiling_hz: float | None
    pitch_mean_hz: float | None
    pitch_sd_semitones: float | None
    window_pitch_semitones: tuple[float, ...]  # median pitch per window of speech (the speaker check)
    intensity_db: float | None
    jitter_percent: float | None
    shimmer_percent: float | None
    hnr_db: float | None
    syllables: int | None
    voice_quality_seconds: float  # how much speech jitter, shimmer and HNR were measured on


def praat_version() -> str:
    import parselmouth

    return f"Praat {parselmouth.PRAAT_VERSION} via parselmouth {parselmouth.__version__}"


def measure_voice(speech: np.ndarray) -> VoiceMeasures:
    """Praat's measures of 16 kHz mono speech (the stretches of speech, concatenated)."""
    import parselmouth
    from parselmouth.praat import call

    speech = np.asarray(speech, dtype=np.float64)
    if speech.size < MIN_SECONDS * SAMPLE_RATE or not np.any(speech):  # too short for one pitch window, or silent
        return VoiceMeasures(0.0, None, None, None, None, (), None, None, None, None, None, 0.0)
    sound = parselmouth.Sound(speech, sampling_frequency=SAMPLE_RATE)
    # The first pass only sets the range: a sample of the speech is enough.
    first = _sample(sound, parselmouth).to_pitch_ac(time_step=PITCH_STEP, pitch_floor=FIRST_PASS_FLOOR,
                                                    pitch_ceiling=FIRST_PASS_CEILING)
    f0 = first.selected_array["frequency"]
    f0 = f0[f0 > 0]
    if f0.size < 10:  # under 0.1 s voiced: nothing to measure the voice on
        return VoiceMeasures(f0.size * PITCH_STEP, None, None, None, None, (), _intensity(sound, 75.0),
                             None, None, None, None, 0.0)
    floor = max(40.0, 0.75 * float(np.quantile(f0, 0.25)))
    ceiling = min(1000.0, 1.5 * float(np.quantile(f0, 0.75)))
    pitch = sound.to_pitch_ac(time_step=PITCH_STEP, pitch_floor=floor, pitch_ceiling=ceiling)
    track = pitch.selected_array["frequency"]
    voiced = track[track > 0]
    semitones = 12 * np.log2(voiced) if voiced.size else voiced

    sample = _sample(sound, parselmouth)
    quality = _voice_quality(sample, pitch if sample is sound else None, floor, ceiling, call)
    return VoiceMeasures(
        voiced_seconds=voiced.size * PITCH_STEP,
        pitch_floor_hz=round(floor, 1),
        pitch_ceiling_hz=round(ceiling, 1),
        pitch_mean_hz=float(voiced.mean()) if voiced.size else None,
        pitch_sd_semitones=float(np.std(semitones, ddof=1)) if voiced.size > 1 else None,
        window_pitch_semitones=_window_medians(pitch.xs(), track),
        intensity_db=_intensity(sound, floor),
        syllables=syllable_nuclei(sound, pitch, call),
        **quality,
    )


def _intensity(sound, floor: float) -> float | None:
    from parselmouth.praat import call

    if sound.duration < 6.4 / floor:  # Praat needs a few pitch periods for one intensity frame
        return None
    value = call(sound.to_intensity(minimum_pitch=floor, subtract_mean=False), "Get mean", 0, 0, "energy")
    return _finite(value)


def _sample(sound, parselmouth):
    """The speech itself, or MAX_SAMPLE_SECONDS of it in evenly spaced pieces."""
    if sound.duration <= MAX_SAMPLE_SECONDS:
        return sound
    piece = MAX_SAMPLE_SECONDS / _QUALITY_PIECES
    step = (sound.duration - piece) / (_QUALITY_PIECES - 1)
    values = sound.values[0]
    parts = [values[int(k * step * SAMPLE_RATE): int((k * step + piece) * SAMPLE_RATE)] for k in range(_QUALITY_PIECES)]
    return parselmouth.Sound(np.concatenate(parts), sampling_frequency=SAMPLE_RATE)


def _voice_quality(sound, pitch, floor: float, ceiling: float, call) -> dict:
    if pitch is None:  # a sample of the speech: its own pitch
        pitch = sound.to_pitch_ac(time_step=PITCH_STEP, pitch_floor=floor, pitch_ceiling=ceiling)
    pulses = call([sound, pitch], "To PointProcess (cc)")
    jitter = call(pulses, "Get jitter (local)", 0, 0, 0.0001, 0.02, 1.3)
    shimmer = call([sound, pulses], "Get shimmer (local)", 0, 0, 0.0001, 0.02, 1.3, 1.6)
    harmonicity = call(sound, "To Harmonicity (cc)", 0.01, floor, 0.1, 1.0)
    frames = harmonicity.values[0]
    voiced = frames[frames > -200]  # Praat writes -200 dB for frames without periodicity
    return {
        "jitter_percent": _percent(jitter),
        "shimmer_percent": _percent(shimmer),
        "hnr_db": float(voiced.mean()) if voiced.size else None,
        "voice_quality_seconds": round(sound.duration, 3),
    }


def syllable_nuclei(sound, pitch=None, call=None) -> int | None:
    """The number of syllable nuclei (de Jong & Wempe 2009; see the module docstring).

    ``pitch`` decides which peaks are voiced: the speech's own two-pass pitch when
    given. The published script computes a 30-450 Hz pitch of its own, which cost
    more than all the rest together; on 30-40 espeak-ng check-ins of bench/audio.py
    the two gave the same error (9.9 and 9.2 syllables per minute, r 0.93 and 0.94)."""
    if call is None:
        from parselmouth.praat import call
    if sound.duration < 0.2:
        return None
    intensity = call(sound, "To Intensity", 50, 0, "yes")
    frames_t, frames_db = intensity.xs(), intensity.values[0]
    threshold = max(float(np.quantile(frames_db, 0.99)) + SILENCE_DB, float(frames_db.min()))
    contour = call(call(intensity, "Down to Matrix"), "To Sound (slice)", 1)
    extrema = call(contour, "To PointProcess (extrema)", "Left", "yes", "no", "Sinc70")
    times = call(extrema, "To Matrix").values[0] if call(extrema, "Get number of points") else np.zeros(0)
    peaks = [(t, v) for t in times if (v := call(contour, "Get value at time", t, "Cubic")) > threshold]
    nuclei = []
    for i, (t, level) in enumerate(peaks):
        following = peaks[i + 1][0] if i + 1 < len(peaks) else intensity.xmax
        between = frames_db[(frames_t >= t) & (frames_t <= following)]  # Praat's "Get minimum", no interpolation
        if between.size and abs(level - between.min()) > MIN_DIP_DB:
            nuclei.append(t)
    if pitch is None:
        pitch = call(sound, "To Pitch (ac)", 0.02, 30, 4, "no", 0.03, 0.25, 0.01, 0.35, 0.25, 450)
    frequency = pitch.selected_array["frequency"]
    return sum(1 for t in nuclei if _voiced_at(frequency, pitch.x1, pitch.dx, t))


def _voiced_at(frequency: np.ndarray, x1: float, dx: float, t: float) -> bool:
    """Where Praat's linear "Get value at time" is defined: the frames on both sides of t are voiced."""
    position = (t - x1) / dx
    sides = [k for k in (math.floor(position), math.floor(position) + 1) if 0 <= k < frequency.size]
    return bool(sides) and all(frequency[k] > 0 for k in sides)


def _window_medians(times: np.ndarray, track: np.ndarray) -> tuple[float, ...]:
    """Median pitch (semitones re 1 Hz) of each SPEAKER_WINDOW_SECONDS of speech with enough voicing."""
    medians = []
    window = np.floor(times / SPEAKER_WINDOW_SECONDS).astype(int)
    for w in np.unique(window):
        f0 = track[(window == w) & (track > 0)]
        if f0.size * PITCH_STEP >= _MIN_VOICED_PER_WINDOW:
            medians.append(round(float(np.median(12 * np.log2(f0))), 2))
    return tuple(medians)


def _percent(value: float) -> float | None:
    value = _finite(value)
    return None if value is None else 100 * value


def _finite(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None
