"""Vision worker: facial emotion over time, expressivity and medication-intake evidence."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

from services.vision.analysis import VisionAnalyser
from services.vision.settings import VisionSettings
from shared.modality import handle_analysis_request
from shared.worker import StageContext, run_stage


def build_handler(context: StageContext):
    settings: VisionSettings = context.settings  # type: ignore[assignment]
    analyser = VisionAnalyser(
        settings.face_landmarker_path,
        settings.hand_landmarker_path,
        settings.emotion_model_path,
        sample_fps=settings.sample_fps,
        max_frames=settings.max_frames,
    )
    # One inference thread: the analyser's models are not shared between threads.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-model")
    return functools.partial(
        handle_analysis_request, context=context, modality="vision", analyse=analyser.analyse, executor=executor
    )


def main() -> None:
    run_stage(VisionSettings(), "vision", build_handler)


if __name__ == "__main__":
    main()
