"""The vision stage's settings (`VISION_*`; the model libraries' own `DEEPFACE_HOME`, `YOLO_CONFIG_DIR`)."""

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.vision.pills import DEFAULT_CLASSES, DEFAULT_IMGSZ, DEFAULT_THRESHOLDS
from shared.settings import StageSettings


class VisionSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="VISION_", extra="ignore", frozen=True, populate_by_name=True)

    face_landmarker_path: Path = Path("models/face_landmarker.task")
    hand_landmarker_path: Path = Path("models/hand_landmarker.task")
    # Facial emotion: "ensemble" (fer's tflite model and face-api's expression network, averaged
    # over the face and its mirror image; the measured best), "fer" (fer's model alone) or
    # "deepface" (deepface's pytorch emotion model, weights under $DEEPFACE_HOME/.deepface/weights/).
    emotion_backend: Literal["ensemble", "fer", "deepface"] = "ensemble"
    emotion_model_path: Path = Path("models/fer_emotion_quantized.tflite")
    # face-api's expression network, converted to ONNX by `make models` (used by "ensemble")
    face_expression_model_path: Path = Path("models/face_expression.onnx")
    deepface_home: Path | None = Field(None, validation_alias="DEEPFACE_HOME")  # deepface's own variable
    # 4 analysed frames a second: expressions and the hand-to-mouth movement
    # last longer than 250 ms, and it keeps a 720p check-in within 3x its decode time.
    sample_fps: float = Field(4.0, gt=0, le=60)
    max_frames: int = Field(600, ge=1)
    # Pill detector: a YOLO detector, .onnx (onnxruntime; no torch needed) or an ultralytics .pt
    # checkpoint. Unset: intake is "not assessed" (a fact about the deployment, not the patient).
    pill_model_path: Path | None = None
    # role -> the model's class name, JSON, e.g. {"pill": "pill", "pill_on_tongue": "pill-on-tongue"}
    pill_classes: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_CLASSES))
    # the model's class name -> minimum score, JSON
    pill_thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    # the detector looks at square crops around the mouth and the fingertips, scaled to this size
    pill_imgsz: int = Field(DEFAULT_IMGSZ, ge=32, le=2048)
    # true only once the configured model has been validated on real pills; a model trained by
    # services/vision/training says "synthetic-trained, not validated on real pills" regardless
    pill_model_validated_on_real_pills: bool = False
    # "auto": cuda when torch (or onnxruntime) sees a GPU, otherwise cpu (MediaPipe and fer always run on the CPU).
    device: str = "auto"
    # Frames per detector / emotion batch; raise it on GPU pods (e.g. 32).
    batch_size: int = Field(8, ge=1, le=512)
    # where a clinic's own live detector (shared/aws/pill_labels.py) is kept once fetched from S3
    clinic_detector_cache_dir: Path = Path(".cache/clinic-detectors")
    # ultralytics' own variable
    ultralytics_config_dir: Path = Field(Path(".cache/ultralytics"), validation_alias="YOLO_CONFIG_DIR")
