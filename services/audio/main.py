"""Audio worker: speech activity, vocal markers, speech emotion and an optional transcript per check-in."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from services.audio.analysis import AudioAnalyser
from services.audio.settings import AudioSettings
from shared.errors import ModelUnavailable
from shared.media import extract_audio
from shared.modality import Progress, handle_analysis_request
from shared.worker import StageContext, run_stage


def make_analyse(analyser: AudioAnalyser, sample_rate: int):
    def analyse(media_path: Path, progress: Progress, _job_id: str = "") -> dict:  # the job id: unused here
        progress(0.02, "extracting the sound track")
        wav = extract_audio(media_path, media_path.with_suffix(".wav"), sample_rate=sample_rate)
        # extraction is the first ~5 % of the work; the analyser reports the rest
        return analyser.analyse(wav, lambda fraction, message: progress(0.05 + 0.95 * fraction, message))

    return analyse


def build_analyser(settings: AudioSettings) -> AudioAnalyser:
    """The analyser with the configured backends; a configured model that cannot load is ModelUnavailable."""
    emotion_model = None
    if settings.emotion_backend == "speechbrain":
        if settings.speechbrain_model_dir is None:
            raise ModelUnavailable(
                "AUDIO_SPEECHBRAIN_MODEL_DIR", "(not set)", "AUDIO_EMOTION_BACKEND=speechbrain needs a model folder"
            )
        from services.audio.speechbrain_emotion import SpeechBrainEmotion  # imports torch: only when chosen

        emotion_model = SpeechBrainEmotion(settings.speechbrain_model_dir, threads=settings.model_threads)
    transcriber = None
    if settings.transcript_enabled:
        from services.audio.transcript import WhisperTranscriber

        transcriber = WhisperTranscriber(settings.whisper_model_path, threads=settings.model_threads)
    return AudioAnalyser(settings.vad_model_path, emotion_model=emotion_model, transcriber=transcriber)


def build_handler(context: StageContext):
    settings: AudioSettings = context.settings  # type: ignore[assignment]
    analyser = build_analyser(settings)
    # One inference thread: the analyser holds one set of model sessions and the work is CPU-bound.
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
