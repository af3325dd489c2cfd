"""Decode a video once and hand out evenly spread frames.

The whole file is decoded in order (H.264 cannot skip frames cheaply), but only
the sampled frames are converted to RGB; the others are merely `grab()`bed.
Decoding runs on a background thread so that it overlaps the model work on the
caller's thread (OpenCV releases the GIL while it decodes).

Rotation metadata (a phone held upright) is honoured by OpenCV's FFmpeg backend
itself (`CAP_PROP_ORIENTATION_AUTO`, on by default), so frames arrive upright.
"""

from __future__ import annotations

import math
import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from shared.domain.errors import InputError

# Frames larger than this (long side, pixels) are scaled down before analysis:
# the landmark models work on 128-256 px inputs and the emotion model on a
# 64x64 crop, so 4K frames only cost conversion time.
MAX_ANALYSIS_SIDE = 1280

# Signatures of still images and other common non-video uploads, so that the
# error says what the file is rather than "cannot decode". FFmpeg happily opens
# a single JPEG or PNG as a one-frame "video", which is not a check-in.
_IMAGE_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"ID3", "an MP3 audio file"),
    (b"fLaC", "a FLAC audio file"),
)


@dataclass(frozen=True)
class VideoInfo:
    """What the container announces (may be missing or wrong; see `DecodeStats`)."""

    fps: float | None
    frame_count: int | None
    duration: float | None


@dataclass
class SampledFrame:
    index: int  # position among the sampled frames, from 0
    frame_number: int  # position among all decoded frames, from 0
    t: float  # seconds from the first frame
    rgb: np.ndarray  # HxWx3 uint8, upright, at most MAX_ANALYSIS_SIDE on the long side


@dataclass
class DecodeStats:
    """Filled in by the decoder thread; complete once iteration has finished."""

    frames_decoded: int = 0
    frames_sampled: int = 0
    last_t: float = 0.0
    width: int = 0  # of the source frames, upright
    height: int = 0
    truncated_by_max_frames: bool = False
    warnings: list[str] = field(default_factory=list)


def _sniff_non_video(path: Path) -> str | None:
    with path.open("rb") as fh:
        head = fh.read(16)
    if not head:
        return "the file is empty"
    for signature, what in _IMAGE_SIGNATURES:
        if head.startswith(signature):
            return f"the file is {what}, not a video"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "the file is a WebP image, not a video"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "the file is a WAV audio file, not a video"
    if head[4:8] == b"ftyp" and head[8:12] == b"M4A ":
        return "the file is an M4A audio file, not a video"
    return None


def open_video(path: Path) -> tuple[cv2.VideoCapture, VideoInfo]:
    """Open `path` for decoding; raise InputError (in words) when it is not a video."""
    if not path.is_file():
        # Not the uploader's fault: the worker lost its temporary file.
        raise FileNotFoundError(f"video file not found: {path}")
    problem = _sniff_non_video(path)
    if problem:
        raise InputError(problem)
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise InputError(
            "the file could not be opened as a video: it is not a video format that can "
            "be decoded, or it is truncated (an interrupted upload)"
        )
    fps = cap.get(cv2.CAP_PROP_FPS)
    count = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    fps_ok = fps if 0 < fps < 1000 else None
    count_ok = int(count) if 0 < count < 1e9 else None
    duration = count_ok / fps_ok if (fps_ok and count_ok) else None
    return cap, VideoInfo(fps=fps_ok, frame_count=count_ok, duration=duration)


def plan_sampling(info: VideoInfo, sample_fps: float, max_frames: int) -> tuple[float, int | None]:
    """Interval between samples (seconds) and the expected number of samples.

    Samples are taken every 1/sample_fps seconds; a video long enough to give
    more than `max_frames` samples is sampled more sparsely, spread over its
    whole length. When the container does not announce a duration, samples are
    taken every 1/sample_fps seconds and stop at `max_frames` (reported as a
    warning), since the length is only known once the file has been decoded.
    """
    if info.duration is None:
        return 1.0 / sample_fps, None
    wanted = max(1, math.ceil(info.duration * sample_fps - 1e-6))
    if wanted <= max_frames:
        return 1.0 / sample_fps, wanted
    return info.duration / max_frames, max_frames


class FrameSampler:
    """Iterate over sampled frames while a background thread decodes the file.

    Use as a context manager; leaving it early (an exception in the consumer)
    stops the decoder thread and releases the file.
    """

    _END = object()

    def __init__(self, cap: cv2.VideoCapture, info: VideoInfo, interval: float,
                 max_frames: int, *, queue_size: int = 6) -> None:
        self._cap = cap
        self._info = info
        self._interval = interval
        self._max_frames = max_frames
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vision-decode", daemon=True)
        self.stats = DecodeStats()

    def __enter__(self) -> "FrameSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Unblock a producer waiting on a full queue.
        while self._thread.is_alive():
            try:
                self._queue.get(timeout=0.05)
            except queue.Empty:
                pass
        self._cap.release()

    def __iter__(self) -> Iterator[SampledFrame]:
        while True:
            item = self._queue.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            self._decode()
        except BaseException as exc:  # handed to the consumer, raised there
            self._put(exc)
            return
        self._put(self._END)

    def _decode(self) -> None:
        cap, stats = self._cap, self.stats
        fps = self._info.fps
        next_target = 0.0
        t0: float | None = None
        half_frame = 0.5 / fps if fps else 0.0
        frame_number = -1
        while not self._stop.is_set():
            if not cap.grab():
                break
            frame_number += 1
            pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
            if pos_ms is None or pos_ms < 0 or (frame_number > 0 and pos_ms == 0 and fps):
                t_raw = frame_number / fps if fps else 0.0
            else:
                t_raw = pos_ms / 1000.0
            if t0 is None:
                t0 = t_raw
            t = max(0.0, t_raw - t0)
            stats.frames_decoded = frame_number + 1
            stats.last_t = t
            if stats.frames_sampled >= self._max_frames:
                if self._info.duration is None:
                    stats.truncated_by_max_frames = True
                    break
                continue  # keep decoding to learn the true length
            if t + half_frame + 1e-6 < next_target:
                continue
            ok, bgr = cap.retrieve()
            if not ok or bgr is None:
                continue
            if stats.width == 0:
                stats.height, stats.width = bgr.shape[:2]
            rgb = _to_analysis_rgb(bgr)
            frame = SampledFrame(index=stats.frames_sampled, frame_number=frame_number, t=t, rgb=rgb)
            stats.frames_sampled += 1
            # Each decoded frame is used at most once: skip targets it already covers.
            while next_target <= t + half_frame + 1e-6:
                next_target += self._interval
            if not self._put(frame):
                return
        announced = self._info.frame_count
        if announced and stats.frames_decoded < 0.9 * announced and not stats.truncated_by_max_frames:
            stats.warnings.append(
                f"only {stats.frames_decoded} of the {announced} frames the file announces could be "
                "decoded; the file may be truncated or damaged"
            )
        if stats.truncated_by_max_frames:
            stats.warnings.append(
                f"the video does not announce its length; analysis stopped after {self._max_frames} "
                f"frames ({stats.last_t:.1f} s)"
            )


def _to_analysis_rgb(bgr: np.ndarray) -> np.ndarray:
    h, w = bgr.shape[:2]
    long_side = max(h, w)
    if long_side > MAX_ANALYSIS_SIDE:
        scale = MAX_ANALYSIS_SIDE / long_side
        bgr = cv2.resize(bgr, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
