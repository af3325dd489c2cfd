"""Speaking time and pauses, from the voice-activity segments.

Silero VAD (``vad.py``) finds speech segments. Segments closer than
``MIN_PAUSE_SECONDS`` are joined into one stretch of speech; the gaps between
the stretches are the pauses. 250 ms is Goldman-Eisler's convention, used by the
clinical literature on pauses in schizophrenia (Cohen et al. 2014; Parola et al.
2020): it leaves out stop closures and other silences inside words. Silence
before the first and after the last stretch is not a pause (the patient had not
started, or had finished).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from services.audio.vad import Segment

MIN_PAUSE_SECONDS = 0.25


@dataclass(frozen=True)
class SpeechTiming:
    stretches: tuple[Segment, ...]
    recording_seconds: float

    @property
    def speech_seconds(self) -> float:
        return sum((s.duration for s in self.stretches), 0.0)

    @property
    def pauses(self) -> list[float]:
        return [b.start - a.end for a, b in zip(self.stretches, self.stretches[1:])]

    @property
    def span_seconds(self) -> float:
        """First speech onset to last speech offset: the speaking time, pauses included."""
        return self.stretches[-1].end - self.stretches[0].start if self.stretches else 0.0

    def summary(self) -> dict[str, float | int | None]:
        """The raw timing, for people reading the artifact (the markers are built from it)."""
        pauses = self.pauses
        return {
            "speech_seconds": round(self.speech_seconds, 3),
            "speaking_span_seconds": round(self.span_seconds, 3),
            "stretches": len(self.stretches),
            "pauses": len(pauses),
            "longest_pause_seconds": round(max(pauses), 3) if pauses else None,
            "speech_onset_seconds": round(self.stretches[0].start, 3) if self.stretches else None,
        }


def speech_timing(segments: list[Segment], recording_seconds: float) -> SpeechTiming:
    return SpeechTiming(tuple(join_segments(segments, MIN_PAUSE_SECONDS)), recording_seconds)


def join_segments(segments: list[Segment], min_gap: float) -> list[Segment]:
    """Join VAD segments separated by less than ``min_gap`` seconds into stretches of speech."""
    joined: list[Segment] = []
    for seg in segments:
        if joined and seg.start - joined[-1].end < min_gap:
            joined[-1] = Segment(joined[-1].start, seg.end)
        else:
            joined.append(seg)
    return joined


def speech_windows(stretches: tuple[Segment, ...] | list[Segment], max_seconds: float) -> list[tuple[float, float, float]]:
    """Consecutive stretches grouped into (start, end, speech seconds) windows of at most
    ``max_seconds``, cut at pauses; a single longer stretch is cut evenly."""
    windows: list[tuple[float, float, float]] = []
    for seg in stretches:
        if windows and seg.end - windows[-1][0] <= max_seconds:
            start, _end, speech = windows[-1]
            windows[-1] = (start, seg.end, speech + seg.duration)
            continue
        pieces = max(1, math.ceil(seg.duration / max_seconds))
        step = seg.duration / pieces
        windows += [(seg.start + k * step, seg.start + (k + 1) * step, step) for k in range(pieces)]
    return windows
