from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings


class VisionSettings(CommonSettings):
    service_name: str = "schizodot-vision"
    face_landmarker_path: Path = Field(
        Path("models/face_landmarker.task"), validation_alias="VISION_FACE_LANDMARKER_PATH"
    )
    hand_landmarker_path: Path = Field(
        Path("models/hand_landmarker.task"), validation_alias="VISION_HAND_LANDMARKER_PATH"
    )
    emotion_model_path: Path = Field(
        Path("models/fer_emotion_quantized.tflite"), validation_alias="VISION_EMOTION_MODEL_PATH"
    )
    sample_fps: float = Field(5.0, gt=0, le=60, validation_alias="VISION_SAMPLE_FPS")
    max_frames: int = Field(600, ge=1, validation_alias="VISION_MAX_FRAMES")
