"""Audio worker: builds the analyser once, at start-up, and runs the audio stage."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from services.audio.analysis import AudioAnalyser
from services.audio.handlers import AUDIO, make_analyse
from services.audio.languages import ClinicLanguages
from services.audio.settings import AudioSettings
from shared.domain.errors import ModelUnavailable
from shared.runtime.modality import ModalityDeps
from shared.runtime.worker import StageContext, run_stage


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
    transcriber = multilingual = None
    if settings.transcript_enabled:
        from services.audio.transcript import MULTILINGUAL_MODEL_SETTING, WhisperTranscriber

        transcriber = WhisperTranscriber(settings.whisper_model_path, threads=settings.model_threads)
        if settings.whisper_multilingual_model_path:
            multilingual = WhisperTranscriber(settings.whisper_multilingual_model_path,
                                              threads=settings.model_threads, setting=MULTILINGUAL_MODEL_SETTING)
    return AudioAnalyser(settings.vad_model_path, emotion_model=emotion_model, transcriber=transcriber,
                         multilingual=multilingual)


def build_deps(context: StageContext[AudioSettings]) -> ModalityDeps:
    settings = context.settings
    return ModalityDeps(
        storage=context.storage,
        analyse=make_analyse(build_analyser(settings), settings.sample_rate,
                             ClinicLanguages.from_file(context.common.clinics_file)),
        # One inference thread: the analyser holds one set of model sessions and the work is CPU-bound.
        executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="audio-model"),
    )


def main() -> None:
    run_stage(AUDIO, AudioSettings(), build_deps)


if __name__ == "__main__":
    main()
