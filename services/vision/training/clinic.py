"""A clinic earns its own pill detector: train on its reviewed frames, validate on a held-out
split, and keep it live only while it meets the gate (shared/aws/pill_labels.py).

    schizodot pills train --clinic C [--epochs 60] [--min-precision 0.95] [--min-recall 0.90] [--min-frames 200]
    schizodot pills status --clinic C

1. The clinic's labelled frames (`PillLabels.frames`) are split by a hash of each frame id:
   HELDOUT_SHARE of them are held out (the same frame always lands on the same side).
2. The training frames are written as a YOLO dataset and services/vision/training/train.py
   fine-tunes YOLO11n on them (`trained_on: real`: the clinic's own reviewed frames), then
   exports ONNX.
3. The ONNX detector is run on every held-out frame (the whole frame, letterboxed to a
   square) and scored per frame against the reviewers' boxes (`pill_labels.score_frame`).
4. The record (`DetectorRecord`: version = the ONNX file's sha256, the validation figures,
   the gate and whether it is live) and the model are stored under the clinic's prefix.
   Each later reviewed frame is scored with `count_review` and the gate judged again:
   disagreements switch the detector off, agreements can bring it over the gate.

Figures from synthetic frames (services/vision/training/synthetic.py) show that the mechanism
works, never how well a detector finds real pills.
"""

from __future__ import annotations

import hashlib
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from shared.aws.pill_labels import Box, DetectorRecord, Gate, LabelledFrame, PillLabelStore, Tally, score_frame

HELDOUT_SHARE = 0.25
Detect = Callable[[np.ndarray], list[Box]]  # an RGB frame -> pill boxes in its pixels


def is_heldout(frame_id: str, share: float = HELDOUT_SHARE) -> bool:
    digest = hashlib.sha256(frame_id.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < share


def split(frames: list[LabelledFrame], share: float = HELDOUT_SHARE) -> tuple[list[LabelledFrame], list[LabelledFrame]]:
    train = [f for f in frames if not is_heldout(f.frame_id, share)]
    heldout = [f for f in frames if is_heldout(f.frame_id, share)]
    return train, heldout


def decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a stored labelled frame is not a readable JPEG")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


async def evaluate(store: PillLabelStore, frames: list[LabelledFrame], detect: Detect) -> Tally:
    tally = Tally()
    for frame in frames:
        tally += score_frame(frame.boxes, detect(decode(await store.image(frame.clinic_id, frame.frame_id))))
    return tally


def onnx_detect(model_path: Path, imgsz: int = 640, threshold: float = 0.5) -> Detect:
    """The ONNX detector on a whole frame, letterboxed to a square of `imgsz` (as training saw it)."""
    from services.vision.pills import load_pill_detector, square_crop

    detector = load_pill_detector(model_path, thresholds={"pill": threshold}, imgsz=imgsz)

    def detect(rgb: np.ndarray) -> list[Box]:
        h, w = rgb.shape[:2]
        crop = square_crop(rgb, "frame", w / 2, h / 2, max(w, h), imgsz)
        return [d.placed(crop).box for d in detector.detect_batch([crop.image])[0]]

    return detect


async def write_dataset(store: PillLabelStore, frames: list[LabelledFrame], out: Path) -> Path:
    """The frames as a YOLO dataset (train and val are the same training frames: the held-out
    split is kept out of training altogether and scored afterwards)."""
    for split_name in ("train", "val"):
        (out / "images" / split_name).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split_name).mkdir(parents=True, exist_ok=True)
    for frame in frames:
        jpeg = await store.image(frame.clinic_id, frame.frame_id)
        rows = [f"0 {(x0 + x1) / 2 / frame.width:.6f} {(y0 + y1) / 2 / frame.height:.6f} "
                f"{(x1 - x0) / frame.width:.6f} {(y1 - y0) / frame.height:.6f}" for x0, y0, x1, y1 in frame.boxes]
        for split_name in ("train", "val"):
            (out / "images" / split_name / f"{frame.frame_id}.jpg").write_bytes(jpeg)
            (out / "labels" / split_name / f"{frame.frame_id}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    data = out / "data.yaml"
    data.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n  0: pill\n")
    return data


def new_record(clinic_id: str, onnx: bytes, model_key: str, train: list[LabelledFrame],
               heldout: list[LabelledFrame], validation: Tally, gate: Gate) -> DetectorRecord:
    return DetectorRecord(
        clinic_id=clinic_id, version=hashlib.sha256(onnx).hexdigest()[:12], model_key=model_key,
        trained_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        trained_on=[f.frame_id for f in train], heldout=[f.frame_id for f in heldout],
        validation=validation.as_dict(), reviews=Tally().as_dict(), gate=gate).rejudge()


async def train_clinic(store: PillLabelStore, clinic_id: str, *, gate: Gate = Gate(), epochs: int = 60,
                       imgsz: int = 640, weights: Path | None = None, work: Path | None = None,
                       **train_options) -> DetectorRecord:
    """Train on the clinic's reviewed frames, validate on the held-out split, store model and record."""
    from services.vision.training.train import COCO_WEIGHTS, export_onnx, train

    frames = await store.frames(clinic_id)
    train_frames, heldout = split(frames)
    if not train_frames or not any(f.boxes for f in train_frames):
        raise ValueError(f"clinic {clinic_id!r} has {len(frames)} reviewed frames and none with a pill box to "
                         f"train on: reviewers draw the pill's box on evidence frames first")
    with tempfile.TemporaryDirectory(prefix="clinic-pills-", dir=work) as folder:
        folder = Path(folder)
        data = await write_dataset(store, train_frames, folder / "data")
        best = train(data, folder / "run", weights=weights or COCO_WEIGHTS, epochs=epochs, imgsz=imgsz,
                     trained_on="real", **train_options)
        onnx_path = export_onnx(best, imgsz)
        onnx = onnx_path.read_bytes()
        validation = await evaluate(store, heldout, onnx_detect(onnx_path, imgsz))
    version = hashlib.sha256(onnx).hexdigest()[:12]
    key = await store.save_model(clinic_id, version, onnx)
    record = new_record(clinic_id, onnx, key, train_frames, heldout, validation, gate)
    await store.save_record(record)
    return record


async def count_review(store: PillLabelStore, frame: LabelledFrame, detected: list[Box]) -> DetectorRecord | None:
    """A frame reviewed after the clinic's detector was trained, with what the detector found on it:
    scored, the gate judged again, the record saved. None when the clinic has no detector."""
    record = await store.record(frame.clinic_id)
    if record is None:
        return None
    if record.count_review(frame, detected):
        await store.save_record(record)
    return record
