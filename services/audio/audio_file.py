"""The check-in's sound track as samples: 16 kHz mono float32, read in pieces.

The worker hands the analyser a 16 kHz mono PCM WAV (``shared.runtime.media.extract_audio``);
that is read from disk as needed, so a long recording is never held whole. Any
other WAV (another rate, stereo) is converted whole in memory once: channels
averaged, resampled with Praat's sinc resampler (parselmouth, the library the
vocal markers use anyway).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import soundfile

from services.audio.vad import SAMPLE_RATE
from shared.domain.errors import InputError


class AudioFile:
    """A WAV file read in pieces (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        try:
            self._file = soundfile.SoundFile(str(path))
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
            raise InputError(f"the audio track could not be read: it is not a valid WAV file ({_detail(exc)})") from exc
        self.source_rate = self._file.samplerate
        self._memory: np.ndarray | None = None
        if self._file.samplerate != SAMPLE_RATE or self._file.channels != 1:
            self._memory = read_audio(path)
            self._file.close()
        self.frames = self._memory.size if self._memory is not None else self._file.frames

    @property
    def seconds(self) -> float:
        return self.frames / SAMPLE_RATE

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, size):
            yield self._read_frames(start, min(self.frames, start + size))

    def read(self, start_seconds: float, end_seconds: float) -> np.ndarray:
        return self._read_frames(round(start_seconds * SAMPLE_RATE), round(end_seconds * SAMPLE_RATE))

    def _read_frames(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.frames, stop)
        if self._memory is not None:
            return self._memory[start:stop]
        try:
            self._file.seek(start)
            data = self._file.read(max(0, stop - start), dtype="float32")
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise InputError(f"the audio track could not be read: the WAV data is damaged ({_detail(exc)})") from exc
        return np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)

    def close(self) -> None:
        if self._memory is None:
            self._file.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz; ``InputError`` when the file is not decodable audio."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        raise InputError(f"the audio track could not be read: it is not a valid WAV file ({_detail(exc)})") from exc
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    audio = np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)
    if rate != SAMPLE_RATE and audio.size:
        audio = resample(audio, rate, SAMPLE_RATE)
    return np.ascontiguousarray(audio, dtype=np.float32)


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Praat's sinc resampling (anti-aliased when going down)."""
    import parselmouth

    return parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=rate).resample(target).values[0]


def _detail(exc: Exception) -> str:
    return getattr(exc, "error_string", None) or str(exc)  # libsndfile's reason, without the path
