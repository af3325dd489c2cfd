"""Vision worker: facial emotion over time, video markers and medication-intake evidence."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.vision.analysis import VisionAnalyser
from services.vision.clinic_detectors import ClinicDetectors
from services.vision.emotion import DeepFaceEmotion, EmotionClassifier, EnsembleEmotion, FaceApiEmotion
from services.vision.handlers import VISION, make_analyse
from services.vision.pills import load_pill_detector, resolve_device
from services.vision.settings import VisionSettings
from shared.aws.pill_labels import PillLabels
from shared.domain.errors import ModelUnavailable
from shared.runtime.modality import ModalityDeps
from shared.runtime.worker import StageContext, run_stage


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


def build_deps(context: StageContext[VisionSettings]) -> ModalityDeps:
    return ModalityDeps(
        storage=context.storage,
        analyse=make_analyse(build_analyser(context.settings), context.storage, asyncio.get_running_loop(),
                             ClinicDetectors(PillLabels(context.storage), asyncio.get_running_loop(),
                                             context.settings.clinic_detector_cache_dir)),
        # One inference thread: the analyser's models are not shared between threads.
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-model"),
    )


def main() -> None:
    run_stage(VISION, VisionSettings(), build_deps)


if __name__ == "__main__":
    main()
