"""How good the recording is for measuring a voice: clipping, bandwidth, noise, a second voice.

Each condition becomes a quality flag on the markers it weakens, or withholds a
marker it voids (``markers.py`` applies them). The thresholds:

- **clipped**: more than ``CLIP_LIMIT`` of the speech samples at full scale. Clipping
  flattens the waveform's peaks, which is what jitter, shimmer and HNR measure, so
  those are withheld; intensity and syllable peaks are underestimated (flagged).
- **narrowband_audio**: less than ``NARROWBAND_ENERGY_SHARE`` of the speech's energy
  above 4 kHz (telephone audio, 8 kHz sampling). Pitch and timing survive; HNR,
  shimmer and intensity differ from full-band recordings (flagged, compare only
  with other narrowband recordings).
- **low_snr**: speech less than ``LOW_SNR_DB`` above the background (measured
  where the VAD found no speech). bench/audio.py shows jitter and shimmer drifting
  with noise; everything is flagged.
- **source** (``recording_source``): how the original recording's sound was made,
  read from its container before it is converted to 16 kHz mono: sample rate,
  channels, codec and the device where the container names one. Fusion's quality
  gate (services/fusion/baseline.py) does not compare a check-in recorded another
  way with the patient's baseline.
- **multiple_speakers_suspected**: the median pitch of 1-s windows of speech falls
  into two groups at least ``TWO_VOICES_SEMITONES`` apart, with no window between them
  (a gap of ``TWO_VOICES_MIN_GAP``), each with at least ``TWO_VOICES_MIN_SHARE`` of the windows. One speaker's utterances rarely differ
  that much; a man and a woman (about 12 semitones) do. Two voices of similar
  pitch are not detected: this is a pitch check, not speaker recognition.
"""

from __future__ import annotations

import json
import math
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from services.audio.vad import SAMPLE_RATE, WINDOW_SAMPLES, Segment

CLIP_LEVEL = 0.999
CLIP_LIMIT = 0.01
NARROWBAND_ENERGY_SHARE = 1e-4
LOW_SNR_DB = 20.0
TWO_VOICES_SEMITONES = 7.0
TWO_VOICES_MIN_GAP = 3.0
TWO_VOICES_MIN_SHARE = 0.2
TWO_VOICES_MIN_WINDOWS = 2


@dataclass
class AudioQuality:
    sample_rate_hz: int
    snr_db: float | None = None
    clipped_fraction: float | None = None
    narrowband: bool | None = None
    voice_groups_hz: tuple[float, float] | None = None  # set when two voices are suspected
    warnings: list[str] = field(default_factory=list)

    @property
    def clipped(self) -> bool:
        return self.clipped_fraction is not None and self.clipped_fraction > CLIP_LIMIT

    @property
    def low_snr(self) -> bool:
        return self.snr_db is not None and self.snr_db < LOW_SNR_DB

    @property
    def two_voices(self) -> bool:
        return self.voice_groups_hz is not None

    def explain(self) -> None:
        """Warnings in words, for the people reading the result."""
        if self.clipped:
            self.warnings.append(
                f"the recording is clipped ({100 * self.clipped_fraction:.1f} % of speech samples at full scale): "
                "jitter, shimmer and HNR are not measured; intensity and speech rate are underestimated")
        if self.narrowband:
            self.warnings.append(
                "narrowband audio (nothing above 4 kHz, e.g. a telephone line): intensity, HNR, jitter and shimmer "
                "differ from a full-band microphone; compare them only with other narrowband recordings")
        if self.low_snr:
            self.warnings.append(
                f"noisy recording (speech {self.snr_db:.0f} dB above the background): every vocal marker is less "
                "reliable")
        if self.two_voices:
            low, high = self.voice_groups_hz
            self.warnings.append(
                f"two voices of clearly different pitch were heard (around {low:.0f} Hz and {high:.0f} Hz): the "
                "patient's pitch is not reported and the timing markers include the other voice")

    def as_dict(self) -> dict:
        return {
            "sample_rate_hz": self.sample_rate_hz,
            "snr_db": self.snr_db,
            "clipped_fraction": self.clipped_fraction,
            "narrowband": self.narrowband,
            "multiple_speakers_suspected": self.two_voices,
            "warnings": list(self.warnings),
        }


def window_power(block: np.ndarray) -> np.ndarray:
    """Mean power of each VAD window (512 samples) of a chunk."""
    n = block.size // WINDOW_SAMPLES
    if block.size % WINDOW_SAMPLES:
        block = np.concatenate([block, np.zeros(WINDOW_SAMPLES - block.size % WINDOW_SAMPLES, np.float32)])
        n += 1
    return np.square(block.reshape(n, WINDOW_SAMPLES), dtype=np.float64).mean(axis=1)


def snr_db(power: np.ndarray, stretches: tuple[Segment, ...]) -> float | None:
    """Speech power over background power (outside speech), in dB; None without both
    at least 1 s of speech and of background, or when the background is digital silence."""
    speech = np.zeros(power.size, dtype=bool)
    for seg in stretches:
        speech[int(seg.start * SAMPLE_RATE) // WINDOW_SAMPLES: math.ceil(seg.end * SAMPLE_RATE / WINDOW_SAMPLES)] = True
    one_second = SAMPLE_RATE / WINDOW_SAMPLES
    if speech.sum() < one_second or (~speech).sum() < one_second:
        return None
    noise = float(power[~speech].mean())
    if noise < 1e-10:  # below 16-bit quantisation: no background to compare with
        return None
    return round(10 * math.log10(max(float(power[speech].mean()), 1e-12) / noise), 1)


def clipping_and_bandwidth(speech: np.ndarray) -> tuple[float, bool | None]:
    """Share of speech samples at full scale, and whether the speech is narrowband."""
    clipped = float(np.mean(np.abs(speech) >= CLIP_LEVEL)) if speech.size else 0.0
    n = speech.size // WINDOW_SAMPLES
    if not n:
        return round(clipped, 4), None
    frames = speech[: n * WINDOW_SAMPLES].reshape(n, WINDOW_SAMPLES) * np.hanning(WINDOW_SAMPLES)
    spectrum = np.square(np.abs(np.fft.rfft(frames, axis=1))).sum(axis=0)
    total = float(spectrum.sum())
    above_4k = float(spectrum[int(4000 / (SAMPLE_RATE / WINDOW_SAMPLES)) + 2:].sum())  # skip the resampler's roll-off
    return round(clipped, 4), (above_4k / total < NARROWBAND_ENERGY_SHARE) if total > 0 else None


def voice_groups(window_semitones: tuple[float, ...]) -> tuple[float, float] | None:
    """The two pitch groups (Hz) when the windows' median pitches split in two far-apart groups, else None.

    The best split of the sorted medians into a low and a high group (the one that
    minimises the spread within the groups, i.e. 1-D two-means) is accepted when the
    groups' centres are TWO_VOICES_SEMITONES or more apart, TWO_VOICES_MIN_GAP
    separates the groups, and each holds at least TWO_VOICES_MIN_SHARE of the windows
    (and TWO_VOICES_MIN_WINDOWS)."""
    values = np.sort(np.asarray(window_semitones, dtype=float))
    n = values.size
    smallest = max(TWO_VOICES_MIN_WINDOWS, math.ceil(TWO_VOICES_MIN_SHARE * n))
    best = None
    for k in range(smallest, n - smallest + 1):
        low, high = values[:k], values[k:]
        spread = float(((low - low.mean()) ** 2).sum() + ((high - high.mean()) ** 2).sum())
        if best is None or spread < best[0]:
            best = (spread, float(low.mean()), float(high.mean()), float(high[0] - low[-1]))
    if best is None or best[2] - best[1] < TWO_VOICES_SEMITONES or best[3] < TWO_VOICES_MIN_GAP:
        return None
    return round(2 ** (best[1] / 12), 1), round(2 ** (best[2] / 12), 1)


# Container tags that name the recording device (iOS/macOS QuickTime, Android).
_DEVICE_TAGS = (("com.apple.quicktime.make", "com.apple.quicktime.model"), ("com.android.manufacturer",
                "com.android.model"))
PROBE_TIMEOUT_SECONDS = 30.0


def recording_source(media_path: Path) -> dict[str, Any] | None:
    """The original sound track's sample rate, channels, codec, device and encoder (ffprobe), or None
    when the file cannot be probed (the analysis goes on; the gate then has nothing to compare)."""
    try:
        done = subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
             "stream=codec_name,sample_rate,channels:format_tags", "-of", "json", str(media_path)],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_SECONDS, check=False)
        data = json.loads(done.stdout or "{}")
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return None
    stream = next(iter(data.get("streams") or []), None)
    if done.returncode != 0 or not stream:
        return None
    tags = {k.lower(): str(v) for k, v in ((data.get("format") or {}).get("tags") or {}).items()}
    device = next((" ".join(tags[k] for k in keys) for keys in _DEVICE_TAGS if all(k in tags for k in keys)), None)
    rate = stream.get("sample_rate")
    return {"sample_rate_hz": int(rate) if str(rate or "").isdigit() else None,
            "channels": stream.get("channels"), "codec": stream.get("codec_name"), "device": device,
            "encoder": tags.get("encoder")}  # the recording software, e.g. a browser's; a hint, not compared
