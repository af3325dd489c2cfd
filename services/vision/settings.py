from pathlib import Path
from typing import Literal

from pydantic import Field

from shared.settings import CommonSettings
from services.vision.pills import DEFAULT_CLASSES, DEFAULT_IMGSZ, DEFAULT_THRESHOLDS


class VisionSettings(CommonSettings):
    service_name: str = "schizodot-vision"
    face_landmarker_path: Path = Field(
        Path("models/face_landmarker.task"), validation_alias="VISION_FACE_LANDMARKER_PATH"
    )
    hand_landmarker_path: Path = Field(
        Path("models/hand_landmarker.task"), validation_alias="VISION_HAND_LANDMARKER_PATH"
    )
    # Facial emotion: "ensemble" (fer's tflite model and face-api's expression network, averaged
    # over the face and its mirror image; the measured best), "fer" (fer's model alone) or
    # "deepface" (deepface's pytorch emotion model, weights under $DEEPFACE_HOME/.deepface/weights/).
    emotion_backend: Literal["ensemble", "fer", "deepface"] = Field(
        "ensemble", validation_alias="VISION_EMOTION_BACKEND"
    )
    emotion_model_path: Path = Field(
        Path("models/fer_emotion_quantized.tflite"), validation_alias="VISION_EMOTION_MODEL_PATH"
    )
    # face-api's expression network, converted to ONNX by `make models` (used by "ensemble")
    face_expression_model_path: Path = Field(
        Path("models/face_expression.onnx"), validation_alias="VISION_FACE_EXPRESSION_MODEL_PATH"
    )
    deepface_home: Path | None = Field(None, validation_alias="DEEPFACE_HOME")
    # 4 analysed frames a second: expressions and the hand-to-mouth movement
    # last longer than 250 ms, and it keeps a 720p check-in within 3x its decode time.
    sample_fps: float = Field(4.0, gt=0, le=60, validation_alias="VISION_SAMPLE_FPS")
    max_frames: int = Field(600, ge=1, validation_alias="VISION_MAX_FRAMES")
    # Pill detector: a YOLO detector, .onnx (onnxruntime; no torch needed) or an ultralytics .pt
    # checkpoint. Unset: intake is "not assessed" (a fact about the deployment, not the patient).
    pill_model_path: Path | None = Field(None, validation_alias="VISION_PILL_MODEL_PATH")
    # role -> the model's class name, JSON, e.g. {"pill": "pill", "pill_on_tongue": "pill-on-tongue"}
    pill_classes: dict[str, str] = Field(dict(DEFAULT_CLASSES), validation_alias="VISION_PILL_CLASSES")
    # the model's class name -> minimum score, JSON
    pill_thresholds: dict[str, float] = Field(dict(DEFAULT_THRESHOLDS), validation_alias="VISION_PILL_THRESHOLDS")
    # the detector looks at square crops around the mouth and the fingertips, scaled to this size
    pill_imgsz: int = Field(DEFAULT_IMGSZ, ge=32, le=2048, validation_alias="VISION_PILL_IMGSZ")
    # true only once the configured model has been validated on real pills; a model trained by
    # services/vision/training says "synthetic-trained, not validated on real pills" regardless
    pill_model_validated_on_real_pills: bool = Field(
        False, validation_alias="VISION_PILL_MODEL_VALIDATED_ON_REAL_PILLS"
    )
    # "auto": cuda when torch (or onnxruntime) sees a GPU, otherwise cpu (MediaPipe and fer always run on the CPU).
    device: str = Field("auto", validation_alias="VISION_DEVICE")
    # Frames per detector / emotion batch; raise it on GPU pods (e.g. 32).
    batch_size: int = Field(8, ge=1, le=512, validation_alias="VISION_BATCH_SIZE")
    ultralytics_config_dir: Path = Field(Path(".cache/ultralytics"), validation_alias="YOLO_CONFIG_DIR")
