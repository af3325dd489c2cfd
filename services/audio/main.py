"""Audio worker: speech activity, vocal markers and speech emotion per check-in."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.audio.analysis import AudioAnalyser
from services.audio.settings import AudioSettings
from shared.media import extract_audio
from shared.modality import Progress, handle_analysis_request
from shared.worker import StageContext, run_stage


def make_analyse(analyser: AudioAnalyser, sample_rate: int):
    def analyse(media_path: Path, progress: Progress) -> dict:
        progress(0.05, "extracting the sound track")
        wav = extract_audio(media_path, media_path.with_suffix(".wav"), sample_rate=sample_rate)
        return analyser.analyse(wav, progress)

    return analyse


def build_handler(context: StageContext):
    settings: AudioSettings = context.settings  # type: ignore[assignment]
    analyser = AudioAnalyser(settings.vad_model_path, emotion_backend=settings.emotion_backend)
    # One inference thread: the analyser holds one model session and the work is CPU-bound.
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio-model")
    return functools.partial(
        handle_analysis_request,
        context=context,
        modality="audio",
        analyse=make_analyse(analyser, settings.sample_rate),
        executor=executor,
    )


def main() -> None:
    run_stage(AudioSettings(), "audio", build_handler)


if __name__ == "__main__":
    main()
