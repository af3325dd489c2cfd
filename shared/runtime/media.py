"""What an uploaded file really is, and its audio as 16 kHz mono WAV.

Ingest calls `probe` on the bytes (the declared content type is checked with
the request, `shared.domain.checkin.check_content_type`); the audio stage calls
`extract_audio`. Every problem with the file itself is an
`InputError` whose message a person can act on ("the file is not a video: it is a
JPEG image", "the video is truncated at 3.2 s (the file says 10.0 s)"); ffmpeg's
and ffprobe's own output is summarised in words, never passed on raw.

Problems with the machine rather than the file (ffprobe missing, a tool running
past its timeout) raise ordinary exceptions, which the pipeline retries.

Cost: `probe` runs ffprobe twice, once for the header and once reading every
packet (no decoding) to catch files whose data stops before their declared end.
On a 60 s 720p30 H.264 + AAC file of 47 MB (6 Mbit/s) in the page cache that is
about 0.07 s for the header and 0.1 s more for the packet scan (half of each is
ffprobe starting up); `check_truncation=False` skips the scan.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from shared.domain.errors import InputError
from shared.runtime.filetype import looks_like_iso_media, sniff

DEFAULT_MIN_DURATION_SECONDS = 1.0
DEFAULT_MAX_DURATION_SECONDS = 900.0
PROBE_TIMEOUT_SECONDS = 30.0
SCAN_TIMEOUT_SECONDS = 120.0
EXTRACT_TIMEOUT_SECONDS = 600.0

# Containers whose header states the duration; elsewhere (mp3, MPEG-TS, ...) ffprobe
# estimates it from the size and bitrate, so a shorter data end proves nothing.
_DECLARED_DURATION_FORMATS = ("mov", "mp4", "matroska", "webm", "avi")
# Suffixes people use for audio-only recordings, to word "not a video" correctly.
_AUDIO_SUFFIXES = {".wav", ".wave", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".weba"}
# Demuxers that mean "a still image", whatever the bytes' name.
_IMAGE_FORMATS = {"image2", "gif", "apng", "webp_pipe", "png_pipe", "jpeg_pipe", "bmp_pipe",
                  "tiff_pipe", "svg_pipe", "gif_pipe", "qoi_pipe", "jpegxl_pipe", "psd_pipe"}


@dataclass(frozen=True)
class MediaInfo:
    format_name: str  # ffprobe's demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration_seconds: float
    size_bytes: int
    has_video: bool
    has_audio: bool
    video_codec: str | None
    width: int | None  # as stored; `rotation` says how to turn it for display
    height: int | None
    fps: float | None
    rotation: int  # degrees clockwise to display upright: 0, 90, 180 or 270
    audio_codec: str | None
    audio_sample_rate: int | None
    audio_channels: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --- probing -----------------------------------------------------------------------

def probe(
    path: Path,
    *,
    min_duration_seconds: float = DEFAULT_MIN_DURATION_SECONDS,
    max_duration_seconds: float = DEFAULT_MAX_DURATION_SECONDS,
    check_truncation: bool = True,
    timeout_seconds: float = PROBE_TIMEOUT_SECONDS,
) -> MediaInfo:
    """Describe an audio or video file, or raise InputError saying what is wrong with it."""
    path = Path(path)
    size = path.stat().st_size  # a missing file is our bug, not the person's: not an InputError
    noun = "recording" if path.suffix.lower() in _AUDIO_SUFFIXES else "video"
    if size == 0:
        raise InputError("the file is empty (0 bytes)")
    kind = sniff(path)
    if kind is not None:
        raise InputError(f"the file is not {_a(noun)}: it is {kind}")
    fmt, streams = _read_header(path, noun, timeout_seconds)
    video, audio = _main_streams(streams)
    if video is not None:
        noun = "video"
    elif noun == "video":
        noun = "recording"
    duration = _duration(path, fmt, video, audio, noun, max_duration_seconds, check_truncation)
    if duration < min_duration_seconds:
        raise InputError(
            f"the recording is too short ({duration:.1f} s); it must be at least {_human(min_duration_seconds)}"
        )
    return MediaInfo(
        format_name=str(fmt.get("format_name") or ""),
        duration_seconds=round(duration, 3),
        size_bytes=size,
        has_video=video is not None,
        has_audio=audio is not None,
        video_codec=video.get("codec_name") if video else None,
        width=_int(video.get("width")) if video else None,
        height=_int(video.get("height")) if video else None,
        fps=_fps(video) if video else None,
        rotation=_rotation(video) if video else 0,
        audio_codec=audio.get("codec_name") if audio else None,
        audio_sample_rate=_int(audio.get("sample_rate")) if audio else None,
        audio_channels=_int(audio.get("channels")) if audio else None,
    )


def _read_header(path: Path, noun: str, timeout: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The container's format and streams as ffprobe reads them, or InputError in words."""
    result = _run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", str(path)],
        timeout,
    )
    if result.returncode != 0:
        raise InputError(_unreadable(_error_lines(result.stderr, path), path, noun))
    try:
        data = _json(result.stdout)
        fmt = data.get("format") or {}
        streams = data.get("streams") or []
    except ValueError:
        raise InputError("the file is not a recognisable audio or video file") from None
    format_name = str(fmt.get("format_name") or "")
    if format_name in _IMAGE_FORMATS or format_name.endswith("_pipe"):
        raise InputError(f"the file is not {_a(noun)}: it is an image")
    return fmt, streams


def _main_streams(streams: list[dict[str, Any]]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The video and the audio stream analysed; InputError when there is neither."""
    video = next(
        (s for s in streams if s.get("codec_type") == "video"
         and not (s.get("disposition") or {}).get("attached_pic")),  # cover art is not video
        None,
    )
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if video is None and audio is None:
        raise InputError("the file has no audio or video stream")
    return video, audio


def _duration(
    path: Path, fmt: dict[str, Any], video: dict[str, Any] | None, audio: dict[str, Any] | None, noun: str,
    max_duration_seconds: float, check_truncation: bool,
) -> float:
    """How long the recording really is: what the header declares, checked against where
    the packets stop (a truncated upload), or measured when the header does not say."""
    format_name = str(fmt.get("format_name") or "")
    start = _float(fmt.get("start_time")) or 0.0
    declared = _float(fmt.get("duration"))
    if not declared:
        durations = [d for s in (video, audio) if s for d in [_float(s.get("duration"))] if d and d > 0]
        declared = max(durations) if durations else None  # unknown (live WebM, some fMP4): measured below
    if declared is not None and declared > max_duration_seconds:
        raise InputError(
            f"the recording is {_human(declared)} long; the limit is {_human(max_duration_seconds)}"
        )

    duration = declared
    declared_reliable = declared is not None and any(
        name in _DECLARED_DURATION_FORMATS for name in format_name.split(",")
    )
    if declared is None or (check_truncation and declared_reliable):
        data_end = _data_end(path, SCAN_TIMEOUT_SECONDS)
        if data_end is None and declared is None:
            raise InputError(f"the {noun} contains no audio or video data")
        data_duration = max(0.0, (data_end if data_end is not None else start) - start)
        if declared is None:
            duration = data_duration
            if duration > max_duration_seconds:
                raise InputError(
                    f"the recording is {_human(duration)} long; the limit is {_human(max_duration_seconds)}"
                )
        elif declared - data_duration > max(0.5, 0.01 * declared):
            raise InputError(
                f"the {noun} is truncated at {data_duration:.1f} s (the file says {declared:.1f} s)"
            )
    if duration is None:
        raise InputError(f"the length of the {noun} cannot be read")
    return duration


def _unreadable(errors: list[str], path: Path, noun: str) -> str:
    """Why ffprobe could not open the file, for a person."""
    text = "\n".join(errors)
    iso = looks_like_iso_media(path)
    if iso and ("moov atom not found" in text or "End of file" in text):
        return f"the {noun} is truncated or incomplete (its index is missing); upload the whole file again"
    if iso:
        return f"the {noun} is damaged (its index cannot be read); upload the whole file again"
    if "End of file" in text:
        return f"the {noun} is truncated or incomplete; upload the whole file again"
    return "the file is not a recognisable audio or video file"


def _data_end(path: Path, timeout: float) -> float | None:
    """Where the packets really stop (seconds, the latest pts + duration), reading without decoding."""
    result = _run(
        ["ffprobe", "-v", "error", "-show_entries", "packet=pts_time,dts_time,duration_time",
         "-of", "csv=p=0", str(path)],
        timeout,
    )
    end = None
    for line in result.stdout.splitlines():
        fields = line.split(",")
        if len(fields) < 3:
            continue
        ts = _float(fields[0]) if fields[0] != "N/A" else _float(fields[1])
        if ts is None:
            continue
        ts += _float(fields[2]) or 0.0
        if end is None or ts > end:
            end = ts
    return end


# --- audio extraction --------------------------------------------------------------

def extract_audio(
    src: Path,
    dest_wav: Path,
    sample_rate: int = 16000,
    *,
    timeout_seconds: float = EXTRACT_TIMEOUT_SECONDS,
) -> Path:
    """Write the first audio track of `src` as mono 16-bit PCM WAV at `sample_rate` Hz.

    The WAV appears only when complete (written beside it, then renamed).
    """
    src, dest_wav = Path(src), Path(dest_wav)
    if not src.is_file():
        raise FileNotFoundError(f"no such file: {src}")  # our bug, not the person's
    dest_wav.parent.mkdir(parents=True, exist_ok=True)
    partial = dest_wav.with_name(f".{dest_wav.name}.{uuid.uuid4().hex[:8]}.partial.wav")
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", "-i", str(src),
        "-map", "0:a:0", "-vn", "-sn", "-dn", "-ac", "1", "-ar", str(sample_rate),
        "-c:a", "pcm_s16le", "-f", "wav", str(partial),
    ]
    try:
        result = _run(command, timeout_seconds)
        if result.returncode != 0:
            if str(partial) in result.stderr:  # writing failed (disk full, permissions): retry
                lines = _error_lines(result.stderr, partial)
                raise RuntimeError(f"ffmpeg could not write {dest_wav}: {'; '.join(lines[-2:])}")
            raise InputError(_extract_failure(result.stderr, src))
        if partial.stat().st_size <= 44:
            raise InputError("the audio track is empty: it holds no sound to analyse")
        os.replace(partial, dest_wav)
    finally:
        partial.unlink(missing_ok=True)
    return dest_wav


def _extract_failure(stderr: str, src: Path) -> str:
    lines = _error_lines(stderr, src)
    text = "\n".join(lines)
    if "matches no streams" in text:
        return "the file has no audio track"
    if not any("Error while decoding" in line for line in lines) and (
        "moov atom not found" in text or "End of file" in text
        or "Invalid data found when processing input" in text
    ):
        return _unreadable(lines, src, "file")
    decoding_errors = sum(1 for line in lines if "Error while decoding" in line)
    reasons = [line for line, _ in Counter(
        _reason(line) for line in lines if "Error while decoding" not in line
    ).most_common() if line][:2]
    if decoding_errors or reasons:
        detail = "; ".join(reasons) if reasons else "invalid data"
        count = f"{decoding_errors} audio frames could not be decoded; " if decoding_errors else ""
        return f"the audio track is damaged and cannot be decoded ({count}ffmpeg says: {detail})"
    return "the audio track could not be read"


def _reason(line: str) -> str:
    line = re.sub(r"^\[[^\]]*\]\s*", "", line).strip().rstrip(".")
    return line[:1].lower() + line[1:120] if line else ""


# --- helpers -------------------------------------------------------------------------

def _run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            command, capture_output=True, text=True, errors="replace", timeout=timeout, check=False,
        )
    except FileNotFoundError:
        raise RuntimeError(f"{command[0]} is not installed (Debian: apt-get install ffmpeg)") from None
    except subprocess.TimeoutExpired:
        raise TimeoutError(f"{command[0]} did not finish within {timeout:g} s") from None


def _error_lines(stderr: str, path: Path) -> list[str]:
    """ffmpeg's error lines without memory addresses or our file path."""
    lines = []
    for raw in stderr.splitlines():
        line = re.sub(r" @ 0x[0-9a-f]+", "", raw).replace(str(path), "the file").strip()
        if line:
            lines.append(line)
    return lines


def _json(text: str) -> dict[str, Any]:
    value = json.loads(text or "{}")
    if not isinstance(value, dict):
        raise ValueError("not an object")
    return value


def _a(noun: str) -> str:
    return "an audio recording" if noun == "recording" else f"a {noun}"


def _human(seconds: float) -> str:
    if seconds < 60:
        tenths = round(seconds, 1)
        return f"{tenths:.0f} s" if tenths == int(tenths) else f"{tenths:.1f} s"
    minutes = seconds / 60
    return f"{round(minutes):d} min" if abs(minutes - round(minutes)) < 0.05 else f"{minutes:.1f} min"


def _float(value: Any) -> float | None:
    try:
        result = float(value)
    except (TypeError, ValueError):
        return None
    return result if math.isfinite(result) else None


def _int(value: Any) -> int | None:
    number = _float(value)
    return int(number) if number is not None else None


def _fps(stream: dict[str, Any]) -> float | None:
    for key in ("avg_frame_rate", "r_frame_rate"):
        num, _, den = str(stream.get(key) or "").partition("/")
        rate = _float(num), _float(den or "1")
        if rate[0] and rate[1]:
            return round(rate[0] / rate[1], 3)
    return None


def _rotation(stream: dict[str, Any]) -> int:
    """Clockwise degrees to display upright, from the display matrix or an old `rotate` tag."""
    for side in stream.get("side_data_list") or []:
        if "rotation" in side:
            degrees = _float(side["rotation"]) or 0.0
            return int(round(-degrees / 90.0) * 90) % 360
    degrees = _float((stream.get("tags") or {}).get("rotate")) or 0.0
    return int(round(degrees / 90.0) * 90) % 360
