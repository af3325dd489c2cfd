"""Pill detector: an ultralytics YOLO model with configured class names and thresholds.

The model is optional (no path configured: the pill steps are "not assessed").
A configured path that cannot be loaded, or a model that lacks one of the
configured classes, is a start-up error naming the setting (ModelUnavailable).

Roles are fixed by the observed-dosing protocol; which class of the model plays
each role comes from settings (VISION_PILL_CLASSES), so a model trained with
other names (e.g. "pill-on-tongue") is used without retraining:
  pill            a pill anywhere in view (held up in the hand)
  pill_on_tongue  an open mouth with a pill on the tongue
  empty_mouth     an open mouth with no pill (shown after swallowing)
  hand            a hand (optional: MediaPipe also finds hands)

ultralytics is kept offline: `configure_offline` must run before it is first
imported (it reads YOLO_* from the environment at import time).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.errors import ModelUnavailable

SETTING = "VISION_PILL_MODEL_PATH"
ROLES = ("pill", "pill_on_tongue", "empty_mouth", "hand")
REQUIRED_ROLES = ("pill", "pill_on_tongue", "empty_mouth")
DEFAULT_CLASSES = {"pill": "pill", "pill_on_tongue": "pill_on_tongue", "empty_mouth": "tongue_no_pill",
                   "hand": "hand"}
DEFAULT_THRESHOLDS = {"pill": 0.35, "pill_on_tongue": 0.35, "tongue_no_pill": 0.35, "hand": 0.5}


def configure_offline(config_dir: Path) -> None:
    """Keep ultralytics from reaching the network (checks, font download, telemetry, pip)."""
    config_dir = Path(config_dir)
    os.environ.setdefault("YOLO_CONFIG_DIR", str(config_dir))
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_AUTOINSTALL"] = "0"
    os.environ.setdefault("YOLO_VERBOSE", "False")
    font_dir = Path(os.environ["YOLO_CONFIG_DIR"]) / "Ultralytics"
    font_dir.mkdir(parents=True, exist_ok=True)
    font = font_dir / "Arial.ttf"
    if not font.exists():
        # Plots (training) look for Arial.ttf and would download it; any TrueType font will do.
        import matplotlib

        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    from ultralytics.utils import SETTINGS

    SETTINGS.update({"sync": False})


TORCH_SIDE = ("the CPU image has no torch: the deepface backend and a .pt detector run in the CUDA image "
              "(services/vision/Dockerfile --target cuda) or with services/vision/requirements-torch.txt")


def resolve_device(device: str) -> str:
    """`auto` is the first GPU when torch sees one, else the CPU."""
    try:
        import torch
    except ImportError as exc:
        raise ModelUnavailable("VISION_DEVICE", device, f"{TORCH_SIDE} ({exc})") from exc

    if device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelUnavailable("VISION_DEVICE", device, "no CUDA device is visible to torch")
    return device


@dataclass(frozen=True)
class Detection:
    role: str
    label: str  # the model's class name
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the analysed frame

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


class PillDetector:
    """Loaded once per process; `detect_batch` runs one batch of RGB frames."""

    def __init__(self, model_path: Path, *, classes: dict[str, str] | None = None,
                 thresholds: dict[str, float] | None = None, imgsz: int = 640, device: str = "cpu",
                 config_dir: Path = Path(".cache/ultralytics")) -> None:
        self.path = Path(model_path)
        self.imgsz = int(imgsz)
        self.classes = dict(DEFAULT_CLASSES if classes is None else classes)
        unknown = set(self.classes) - set(ROLES)
        if unknown:
            raise ModelUnavailable("VISION_PILL_CLASSES", self.classes,
                                   f"unknown roles {sorted(unknown)} (roles are {', '.join(ROLES)})")
        missing_roles = [r for r in REQUIRED_ROLES if r not in self.classes]
        if missing_roles:
            raise ModelUnavailable("VISION_PILL_CLASSES", self.classes,
                                   f"no class configured for the roles {missing_roles}")
        if not self.path.is_file():
            raise ModelUnavailable(SETTING, self.path, "pill model file not found")
        if importlib.util.find_spec("ultralytics") is None:
            raise ModelUnavailable(SETTING, self.path, f"{TORCH_SIDE} (ultralytics is not installed)")
        configure_offline(config_dir)
        self.device = resolve_device(device)
        from ultralytics import YOLO

        try:
            self._model = YOLO(str(self.path), task="detect")
            names = dict(self._model.names)
        except Exception as exc:
            raise ModelUnavailable(SETTING, self.path,
                                   f"not an ultralytics YOLO model ({type(exc).__name__}: {exc})") from exc
        if self._model.task != "detect":
            raise ModelUnavailable(SETTING, self.path, f"a {self._model.task} model, not a detector")
        by_name = {name: idx for idx, name in names.items()}
        absent = {role: name for role, name in self.classes.items() if name not in by_name}
        if absent:
            raise ModelUnavailable(
                "VISION_PILL_CLASSES", self.path,
                f"the model has no class {sorted(absent.values())} (its classes: {sorted(by_name)})")
        self._role_of = {by_name[name]: role for role, name in self.classes.items()}
        thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self.thresholds = {self.classes[r]: float(thresholds.get(self.classes[r], 0.35)) for r in self.classes}
        # Ask YOLO for everything above the lowest threshold; each class is then held to its own.
        self._min_conf = min(self.thresholds.values())
        self.digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.names = names
        # Warm up once so that a model that loads but cannot run fails at start-up, not on a patient's video.
        try:
            self.detect_batch([np.zeros((64, 64, 3), dtype=np.uint8)])
        except Exception as exc:
            raise ModelUnavailable(SETTING, self.path, f"the model does not run ({type(exc).__name__}: {exc})") from exc

    def describe(self) -> str:
        return (f"ultralytics YOLO {self.path.name} (sha256 {self.digest}), classes {self.classes}, "
                f"thresholds {self.thresholds}, imgsz {self.imgsz}, device {self.device}")

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """Detections per RGB frame, each class above its own threshold."""
        if not frames:
            return []
        # ultralytics takes numpy images as BGR.
        bgr = [np.ascontiguousarray(f[:, :, ::-1]) for f in frames]
        results = self._model.predict(bgr, imgsz=self.imgsz, conf=self._min_conf, device=self.device,
                                      verbose=False, batch=len(bgr))
        out: list[list[Detection]] = []
        for result in results:
            found: list[Detection] = []
            boxes = result.boxes
            if boxes is not None and len(boxes):
                xyxy = boxes.xyxy.cpu().numpy()
                conf = boxes.conf.cpu().numpy()
                cls = boxes.cls.cpu().numpy().astype(int)
                for box, score, c in zip(xyxy, conf, cls):
                    role = self._role_of.get(int(c))
                    label = self.names[int(c)]
                    if role is None or score < self.thresholds[label]:
                        continue
                    found.append(Detection(role, label, round(float(score), 3),
                                           tuple(round(float(v), 1) for v in box)))
            out.append(_one_mouth_reading(found))
        return out


def _one_mouth_reading(found: list[Detection]) -> list[Detection]:
    """A mouth is either holding the pill or empty: where both classes fire on the
    same mouth (boxes overlapping by half), only the stronger reading is kept."""
    mouths = sorted((d for d in found if d.role in ("pill_on_tongue", "empty_mouth")), key=lambda d: -d.score)
    kept: list[Detection] = []
    for d in mouths:
        if not any(k.role != d.role and _overlap(k.box, d.box) >= 0.5 for k in kept):
            kept.append(d)
    return [d for d in found if d.role not in ("pill_on_tongue", "empty_mouth")] + kept


def _overlap(a: tuple, b: tuple) -> float:
    """Intersection over the smaller box."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0
