"""Pill detection on crops around the mouth and the fingertips.

A tablet is about 15 px wide in a 720p check-in frame, too small for a detector
that sees the whole frame at 640 px. The analyser therefore cuts square crops
where a pill can be, chosen from the landmarks (`mouth_crop`, `fingertip_crop`),
and the detector looks at those, each scaled to its input size; detections are
mapped back to the frame.

Two backends behind one interface (`PillDetector`: `detect_batch(crops)`), chosen
by the model file's suffix:
  .onnx  an ultralytics YOLO detector exported to ONNX, run by onnxruntime
         (no torch, no ultralytics: the CPU vision image needs neither)
  other  an ultralytics YOLO checkpoint (.pt), run by ultralytics on torch,
         imported only when such a model is configured
Both read the class names from the model (the ONNX export keeps them in its
metadata) and take the same crops, so they give the same detections.

The model is optional (none configured: intake is "not assessed"). A configured
path that cannot be loaded, or a model without the configured classes, is a
start-up error naming the setting (ModelUnavailable).

Roles (which class of the model plays each comes from VISION_PILL_CLASSES):
  pill            a pill (required); in the mouth box it counts as a pill on the tongue
  pill_on_tongue  an open mouth holding a pill (optional, for models trained that way)
Whether the mouth is open is read from the face landmarks (compliance.py), and an
open mouth whose crop shows no pill is an empty mouth: no class is needed for it.

Provenance: a model trained by services/vision/training carries
`schizodot_training` in its metadata (the .pt checkpoint's dict, the ONNX model's
metadata_props); `trained_on: synthetic` makes every output say
SYNTHETIC_NOTE. A user's model is reported as validated on real pills only when
VISION_PILL_MODEL_VALIDATED_ON_REAL_PILLS says so.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shared.domain.errors import ModelUnavailable

SETTING = "VISION_PILL_MODEL_PATH"
CLASSES_SETTING = "VISION_PILL_CLASSES"
ROLES = ("pill", "pill_on_tongue")
REQUIRED_ROLES = ("pill",)
DEFAULT_CLASSES = {"pill": "pill"}
# 0.65: the synthetic model's detections on real smiles with big front teeth scored up to 0.64,
# while 92% of painted pills on held-out frames scored above it (README, "Pill detection")
DEFAULT_THRESHOLDS = {"pill": 0.65}
DEFAULT_IMGSZ = 224
NMS_IOU = 0.7  # ultralytics' default for predict
PROVENANCE_KEY = "schizodot_training"
SYNTHETIC_NOTE = "synthetic-trained, not validated on real pills"
UNVALIDATED_NOTE = ("not validated on real pills by this deployment "
                    "(set VISION_PILL_MODEL_VALIDATED_ON_REAL_PILLS=true once it is)")

# Crops: the mouth crop is this many face widths square, centred on the lips; the fingertip
# crop covers the five fingertips, enlarged by FINGERTIP_CROP_MARGIN of its side each side,
# and at least FINGERTIP_CROP_MIN_HAND of the hand's size.
MOUTH_CROP_FACE_WIDTHS = 0.7
FINGERTIP_CROP_MARGIN = 0.35
FINGERTIP_CROP_MIN_HAND = 0.6
FINGERTIPS = np.array([4, 8, 12, 16, 20])
LIPS = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185])
FACE_WIDTH_LANDMARKS = (234, 454)


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
              "(the vision-cuda image: deploy/docker/service.Dockerfile --target cuda) or with services/vision/requirements-torch.txt")


def resolve_device(device: str) -> str:
    """`auto` is the first GPU when torch sees one, else the CPU. Only the torch side (a .pt
    detector, deepface) asks, so no torch is a start-up error naming the image that has it."""
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
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels (of the crop, or of the frame once placed)

    @property
    def centre(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2

    def placed(self, crop: "Crop") -> "Detection":
        """This detection (in the crop's pixels) in the frame's pixels."""
        scale = crop.side / crop.image.shape[0]
        x0, y0, x1, y1 = self.box
        return Detection(self.role, self.label, self.score,
                         (round(crop.left + x0 * scale, 1), round(crop.top + y0 * scale, 1),
                          round(crop.left + x1 * scale, 1), round(crop.top + y1 * scale, 1)))


# --- where to look ----------------------------------------------------------------------------

@dataclass(frozen=True)
class Crop:
    kind: str  # "mouth" or "hand"
    left: float  # the square's place in the frame, pixels
    top: float
    side: float
    image: np.ndarray  # size x size RGB


def square_crop(rgb: np.ndarray, kind: str, cx: float, cy: float, side: float, size: int) -> Crop:
    side = max(float(side), 8.0)
    left, top = cx - side / 2, cy - side / 2
    # the affine map samples outside the frame as a replicated border
    m = np.array([[size / side, 0, -left * size / side], [0, size / side, -top * size / side]], dtype=np.float32)
    interpolation = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    image = cv2.warpAffine(rgb, m, (size, size), flags=interpolation, borderMode=cv2.BORDER_REPLICATE)
    return Crop(kind, left, top, side, image)


def face_width(face_landmarks: np.ndarray) -> float:
    a, b = FACE_WIDTH_LANDMARKS
    width = float(np.linalg.norm(face_landmarks[a, :2] - face_landmarks[b, :2]))
    if width <= 0:
        width = float(np.ptp(face_landmarks[:, 0]))
    return max(width, 1.0)


def mouth_crop(rgb: np.ndarray, face_landmarks: np.ndarray, size: int) -> Crop:
    cx, cy = face_landmarks[LIPS, :2].mean(axis=0)
    return square_crop(rgb, "mouth", cx, cy, MOUTH_CROP_FACE_WIDTHS * face_width(face_landmarks), size)


def fingertip_crop(rgb: np.ndarray, hand_landmarks: np.ndarray, size: int) -> Crop:
    tips = hand_landmarks[FINGERTIPS, :2]
    (x0, y0), (x1, y1) = tips.min(axis=0), tips.max(axis=0)
    hand_size = float(np.ptp(hand_landmarks[:, :2], axis=0).max())
    side = max(max(x1 - x0, y1 - y0) * (1 + 2 * FINGERTIP_CROP_MARGIN), FINGERTIP_CROP_MIN_HAND * hand_size)
    return square_crop(rgb, "hand", (x0 + x1) / 2, (y0 + y1) / 2, side, size)


# --- the detectors ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Provenance:
    trained_on: str | None  # "synthetic", "real", or None when the model does not say
    validated_on_real_pills: bool
    note: str | None
    details: dict

    def as_block(self, model: str) -> dict:
        return {"configured": True, "model": model, "validated_on_real_pills": self.validated_on_real_pills,
                "note": self.note}


def provenance(metadata: dict | None, validated_setting: bool) -> Provenance:
    """What the model says about its training, and what that allows it to claim."""
    details = dict(metadata or {})
    trained_on = details.get("trained_on")
    if trained_on == "synthetic":
        return Provenance("synthetic", False, SYNTHETIC_NOTE, details)
    if validated_setting:
        return Provenance(trained_on, True, None, details)
    return Provenance(trained_on, False, UNVALIDATED_NOTE, details)


class PillDetector:
    """The interface both backends share; `detect_batch` takes square RGB crops of `imgsz` pixels."""

    backend = ""

    def __init__(self, model_path: Path, *, classes: dict[str, str] | None, thresholds: dict[str, float] | None,
                 imgsz: int, validated_on_real_pills: bool) -> None:
        self.path = Path(model_path)
        self.imgsz = int(imgsz)
        self.classes = dict(DEFAULT_CLASSES if classes is None else classes)
        unknown = set(self.classes) - set(ROLES)
        if unknown:
            hint = (" (an empty mouth is now read from the face landmarks: no class is needed)"
                    if "empty_mouth" in unknown else "")
            raise ModelUnavailable(CLASSES_SETTING, self.classes,
                                   f"unknown roles {sorted(unknown)} (roles are {', '.join(ROLES)}){hint}")
        missing_roles = [r for r in REQUIRED_ROLES if r not in self.classes]
        if missing_roles:
            raise ModelUnavailable(CLASSES_SETTING, self.classes, f"no class configured for the roles {missing_roles}")
        if not self.path.is_file():
            raise ModelUnavailable(SETTING, self.path, "pill model file not found")
        self.digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        names, metadata = self._load()
        by_name = {name: idx for idx, name in names.items()}
        absent = {role: name for role, name in self.classes.items() if name not in by_name}
        if absent:
            raise ModelUnavailable(
                CLASSES_SETTING, self.path,
                f"the model has no class {sorted(absent.values())} (its classes: {sorted(by_name)})")
        self.names = names
        self._role_of = {by_name[name]: role for role, name in self.classes.items()}
        thresholds = dict(DEFAULT_THRESHOLDS if thresholds is None else thresholds)
        self.thresholds = {self.classes[r]: float(thresholds.get(self.classes[r], DEFAULT_THRESHOLDS["pill"]))
                           for r in self.classes}
        # Ask for everything above the lowest threshold; each class is then held to its own.
        self._min_conf = min(self.thresholds.values())
        self.provenance = provenance(metadata, validated_on_real_pills)
        # Run once so that a model that loads but cannot run fails at start-up, not on a patient's video.
        try:
            self.detect_batch([np.zeros((self.imgsz, self.imgsz, 3), dtype=np.uint8)])
        except Exception as exc:
            raise ModelUnavailable(SETTING, self.path, f"the model does not run ({type(exc).__name__}: {exc})") from exc

    def _load(self) -> tuple[dict[int, str], dict | None]:
        """Load the model; its class names and its training metadata."""
        raise NotImplementedError

    def _raw(self, crops: np.ndarray) -> list[list[tuple[tuple[float, float, float, float], float, int]]]:
        """(box, score, class) per crop, boxes in crop pixels, above the lowest threshold, after NMS."""
        raise NotImplementedError

    def describe(self) -> str:
        note = f"; {self.provenance.note}" if self.provenance.note else ""
        return (f"{self.backend} {self.path.name} (sha256 {self.digest}), classes {self.classes}, "
                f"thresholds {self.thresholds}, crops of {self.imgsz} px{note}")

    def detect_batch(self, crops: list[np.ndarray]) -> list[list[Detection]]:
        """Detections per square RGB crop (imgsz x imgsz), each class above its own threshold."""
        if not crops:
            return []
        batch = np.stack([c if c.shape[:2] == (self.imgsz, self.imgsz) else
                          cv2.resize(c, (self.imgsz, self.imgsz), interpolation=cv2.INTER_LINEAR) for c in crops])
        out: list[list[Detection]] = []
        for found in self._raw(batch):
            kept = []
            for box, score, cls in found:
                role = self._role_of.get(int(cls))
                label = self.names.get(int(cls))
                if role is None or score < self.thresholds[label]:
                    continue
                kept.append(Detection(role, label, round(float(score), 3), tuple(round(float(v), 1) for v in box)))
            out.append(kept)
        return out


class YoloPtDetector(PillDetector):
    """An ultralytics checkpoint, on torch (imported only here)."""

    backend = "ultralytics YOLO"

    def __init__(self, model_path: Path, *, classes: dict[str, str] | None = None,
                 thresholds: dict[str, float] | None = None, imgsz: int = DEFAULT_IMGSZ, device: str = "cpu",
                 config_dir: Path = Path(".cache/ultralytics"), validated_on_real_pills: bool = False) -> None:
        self._device_setting = device
        self._config_dir = config_dir
        super().__init__(model_path, classes=classes, thresholds=thresholds, imgsz=imgsz,
                         validated_on_real_pills=validated_on_real_pills)

    def _load(self) -> tuple[dict[int, str], dict | None]:
        if not self.path.is_file():
            raise ModelUnavailable(SETTING, self.path, "pill model file not found")
        # Checked before configure_offline, which writes ultralytics' settings (read-only in the CPU image).
        if importlib.util.find_spec("ultralytics") is None:
            raise ModelUnavailable(SETTING, self.path, f"{TORCH_SIDE} (ultralytics is not installed); "
                                                       "or export the model to ONNX, which needs neither")
        configure_offline(self._config_dir)
        from ultralytics import YOLO

        self.device = resolve_device(self._device_setting)
        try:
            self._model = YOLO(str(self.path), task="detect")
            names = {int(k): str(v) for k, v in dict(self._model.names).items()}
        except Exception as exc:
            raise ModelUnavailable(SETTING, self.path,
                                   f"not an ultralytics YOLO model ({type(exc).__name__}: {exc})") from exc
        if self._model.task != "detect":
            raise ModelUnavailable(SETTING, self.path, f"a {self._model.task} model, not a detector")
        ckpt = getattr(self._model, "ckpt", None) or {}
        return names, ckpt.get(PROVENANCE_KEY) if isinstance(ckpt, dict) else None

    def describe(self) -> str:
        return super().describe() + f", device {self.device}"

    def _raw(self, crops: np.ndarray):
        bgr = [np.ascontiguousarray(c[:, :, ::-1]) for c in crops]  # ultralytics takes numpy images as BGR
        results = self._model.predict(bgr, imgsz=self.imgsz, conf=self._min_conf, iou=NMS_IOU, device=self.device,
                                      verbose=False, batch=len(bgr))
        out = []
        for result in results:
            boxes = result.boxes
            if boxes is None or not len(boxes):
                out.append([])
                continue
            out.append(list(zip(map(tuple, boxes.xyxy.cpu().numpy().tolist()), boxes.conf.cpu().numpy().tolist(),
                                boxes.cls.cpu().numpy().astype(int).tolist())))
        return out


class OnnxPillDetector(PillDetector):
    """An ultralytics YOLO detector exported to ONNX, on onnxruntime (no torch, no ultralytics).

    The export's output is (N, 4 + classes, anchors): box centre, width and height in input
    pixels, then one score per class. As ultralytics does: the best class per anchor, above
    the confidence, then non-maximum suppression per class (IoU NMS_IOU).
    """

    backend = "YOLO (ONNX, onnxruntime)"

    def __init__(self, model_path: Path, *, classes: dict[str, str] | None = None,
                 thresholds: dict[str, float] | None = None, imgsz: int = DEFAULT_IMGSZ, device: str = "cpu",
                 validated_on_real_pills: bool = False, **_: object) -> None:
        self._device_setting = device
        super().__init__(model_path, classes=classes, thresholds=thresholds, imgsz=imgsz,
                         validated_on_real_pills=validated_on_real_pills)

    def _load(self) -> tuple[dict[int, str], dict | None]:
        import onnxruntime as ort

        providers = ["CPUExecutionProvider"]
        if self._device_setting != "cpu" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self._session = ort.InferenceSession(str(self.path), providers=providers)
            meta = self._session.get_modelmeta().custom_metadata_map
            names = {int(k): str(v) for k, v in ast.literal_eval(meta["names"]).items()}
        except KeyError as exc:
            raise ModelUnavailable(SETTING, self.path, "an ONNX model without class names: export it with "
                                                       "ultralytics (format=onnx)") from exc
        except Exception as exc:
            raise ModelUnavailable(SETTING, self.path, f"not an ONNX YOLO model ({type(exc).__name__}: {exc})") from exc
        self.device = "cuda" if self._session.get_providers()[0].startswith("CUDA") else "cpu"
        if meta.get("task", "detect") != "detect":
            raise ModelUnavailable(SETTING, self.path, f"a {meta.get('task')} model, not a detector")
        shape = self._session.get_inputs()[0].shape
        fixed = [d for d in shape[2:] if isinstance(d, int)]
        if fixed and any(d != self.imgsz for d in fixed):
            raise ModelUnavailable("VISION_PILL_IMGSZ", self.imgsz, f"the ONNX model takes {shape[2:]} inputs")
        self._input = self._session.get_inputs()[0].name
        self._fixed_batch = isinstance(shape[0], int)
        training = meta.get(PROVENANCE_KEY)
        return names, json.loads(training) if training else None

    def describe(self) -> str:
        return super().describe() + f", device {self.device}"

    def _raw(self, crops: np.ndarray):
        x = np.ascontiguousarray(crops.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0
        if self._fixed_batch:
            pred = np.concatenate([self._session.run(None, {self._input: x[i:i + 1]})[0] for i in range(len(x))])
        else:
            pred = self._session.run(None, {self._input: x})[0]
        out = []
        for p in pred:  # (4 + nc, anchors)
            scores = p[4:]
            cls = scores.argmax(axis=0)
            conf = scores[cls, np.arange(scores.shape[1])]
            keep = conf > self._min_conf
            boxes = _xywh_to_xyxy(p[:4, keep].T)
            conf, cls = conf[keep], cls[keep]
            found = []
            for c in np.unique(cls):
                idx = np.nonzero(cls == c)[0]
                for i in _nms(boxes[idx], conf[idx], NMS_IOU):
                    found.append((tuple(boxes[idx[i]].tolist()), float(conf[idx[i]]), int(c)))
            found.sort(key=lambda f: -f[1])
            out.append(found)
        return out


def _xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    out = np.empty_like(b)
    out[:, 0] = b[:, 0] - b[:, 2] / 2
    out[:, 1] = b[:, 1] - b[:, 3] / 2
    out[:, 2] = b[:, 0] + b[:, 2] / 2
    out[:, 3] = b[:, 1] + b[:, 3] / 2
    return out


def _nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = np.array(order, dtype=int)
        if not len(rest):
            break
        ix = np.clip(np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]), 0, None)
        iy = np.clip(np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]), 0, None)
        inter = ix * iy
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        overlap = inter / (area[i] + area[rest] - inter + 1e-9)
        order = [j for j, o in zip(order, overlap) if o <= iou]
    return keep


def load_pill_detector(model_path: Path, **options) -> PillDetector:
    """The backend the file calls for: ONNX for .onnx, ultralytics otherwise."""
    if Path(model_path).suffix.lower() == ".onnx":
        return OnnxPillDetector(model_path, **options)
    return YoloPtDetector(model_path, **options)
