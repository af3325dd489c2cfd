"""Audio analysis of a check-in: speech timing, vocal markers, speech emotion, optional transcript.

Pure analysis code (no queues, no storage), so the same ``AudioAnalyser`` runs in
the audio worker, a benchmark or a notebook. Models are loaded once in
``__init__`` and injected by the composition root (``main.build_analyser``);
``analyse`` is synchronous and CPU-bound.

Pipeline of ``analyse(wav)``, one concept per module:

1. ``audio_file``: the WAV (16 kHz mono PCM from ``extract_audio``) is read in 30 s
   chunks; other rates are resampled and channels averaged in memory.
2. ``vad`` + ``timing``: Silero VAD runs chunk by chunk (state carried across
   chunks, progress per chunk); its segments become stretches of speech and pauses.
3. ``voice``: Praat's pitch, intensity, jitter, shimmer, HNR and syllable nuclei on
   the speech only (the stretches concatenated).
4. ``quality``: clipping, bandwidth, noise and a second voice, as quality flags.
5. ``transcript`` (when a ``Transcriber`` is given): Whisper over speech windows, in
   the language ``languages.choose_language`` picks from the clinic's expected ones.
6. ``markers``: the vocal markers in ``shared.domain.markers``' shape; ``answers``: the same
   and the transcript's word markers per answer to each prompt, where the check-in
   carries a timeline.
7. ``emotion``: abstains unless a model is configured; a model's probabilities
   over speech windows of <= 30 s are averaged, weighted by speech time.

Speed (bench/audio.py, 2 cores): see the README.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import numpy as np

from services.audio import emotion
from services.audio.answers import answers
from services.audio.audio_file import AudioFile
from services.audio.languages import DEFAULT_LANGUAGES, LanguageChoice, choose_language
from services.audio.markers import vocal_markers
from services.audio.quality import AudioQuality, clipping_and_bandwidth, snr_db, voice_groups, window_power
from services.audio.timing import SpeechTiming, speech_timing, speech_windows
from services.audio.vad import SAMPLE_RATE, Segment, SileroVad, speech_segments
from services.audio.voice import measure_voice, praat_version
from shared.domain.timeline import CheckinTimeline

ProgressCallback = Callable[[float, str], None]

# Audio is read and run through the VAD in chunks of this many samples (30 s, a
# whole number of 512-sample VAD windows), so a long recording is never held whole.
CHUNK_SAMPLES = 938 * 512
# Model emotion and transcript run on windows of speech of at most this length
# (Whisper's own window), cut at pauses.
MAX_WINDOW_SECONDS = 30.0


class Transcriber(Protocol):
    """Speech to text with word timings (e.g. ``transcript.WhisperTranscriber``)."""

    name: str
    multilingual: bool
    language: str | None  # the one language an English-only model transcribes; None for a multilingual one
    language_note: str | None

    def transcribe(self, audio: np.ndarray, offset: float = 0.0, language: str | None = None) -> list[dict]: ...

    def detect_language(self, audio: np.ndarray) -> dict[str, float]: ...


class AudioAnalyser:
    """Speech timing, vocal markers, speech emotion and (optionally) a transcript for one WAV file.

    ``emotion_model`` None means no speech emotion (the result says why);
    ``transcriber`` None means no transcript; ``multilingual`` (Whisper base) transcribes
    check-ins whose clinic expects other languages than English, and identifies the
    language of every transcribed check-in. Load once, call ``analyse`` for each
    file. Calls are serialised by a lock, so sharing one instance between threads
    is safe (one analysis at a time).
    """

    def __init__(
        self,
        vad_model_path: Path,
        *,
        emotion_model: emotion.SpeechEmotionModel | None = None,
        transcriber: Transcriber | None = None,
        multilingual: Transcriber | None = None,
    ) -> None:
        self._vad = SileroVad(Path(vad_model_path))  # raises ModelUnavailable("AUDIO_VAD_MODEL_PATH", ...)
        self._emotion_model = emotion_model
        self._transcriber = transcriber or multilingual
        self._english = transcriber
        self._multilingual = multilingual
        self.models = {"vad": self._vad.name, "features": praat_version()}
        if emotion_model:
            self.models["emotion"] = emotion_model.name
        if transcriber:
            self.models["transcript"] = transcriber.name
        if multilingual:
            self.models["transcript_multilingual"] = multilingual.name
        self._lock = threading.Lock()

    def analyse(self, wav_path: Path, on_progress: ProgressCallback | None = None, *, transcribe: bool = True,
                languages: tuple[str, ...] = DEFAULT_LANGUAGES, timeline: CheckinTimeline | None = None) -> dict:
        """Analyse one WAV file (16 kHz mono is read in chunks; other formats are converted in memory).
        `transcribe=False`: no transcript for this check-in (its options did not ask for one).
        `languages`: the languages the patient's clinic expects (Whisper's codes).
        `timeline`: when each prompt was shown (shared.domain.timeline), for the per-answer markers
        (answers.py); None: the check-in has none, and its answers block says so.

        Returns a JSON-serialisable dict. Raises ``InputError`` when the file cannot
        be decoded as audio and ``FileNotFoundError`` when it does not exist (a
        caller's bug, not the input's).
        """
        progress = on_progress or (lambda fraction, message: None)
        with self._lock, AudioFile(Path(wav_path)) as audio:
            progress(0.0, "reading audio")
            # shares of the progress bar: VAD, voice measures, model emotion, transcript
            transcriber = self._transcriber if transcribe else None
            spans = {"vad": 0.4, "voice": 0.2, "emotion": 0.15 if self._emotion_model else 0.0,
                     "transcript": 0.4 if transcriber else 0.0}
            scale = 0.95 / sum(spans.values())

            timing, padded, power = self._detect_speech(audio, progress, spans["vad"] * scale)
            done = spans["vad"] * scale
            quality = AudioQuality(sample_rate_hz=audio.source_rate, snr_db=snr_db(power, padded))
            voice = None
            if timing.stretches:
                progress(done, "measuring the voice")
                speech = np.concatenate([audio.read(s.start, s.end) for s in timing.stretches])
                quality.clipped_fraction, quality.narrowband = clipping_and_bandwidth(speech)
                voice = measure_voice(speech)
                quality.voice_groups_hz = voice_groups(voice.window_pitch_semitones)
                del speech
            quality.explain()
            done += spans["voice"] * scale

            windows = speech_windows(padded, MAX_WINDOW_SECONDS)
            transcript = self._transcribe(audio, windows, progress, done, spans["transcript"] * scale, transcriber,
                                          requested=transcribe, languages=languages)
            done += spans["transcript"] * scale
            words = sum(len(s["words"]) for s in transcript["segments"]) if transcript["enabled"] else None
            speech_emotion = self._emotion(audio, windows, timing, progress, done, spans["emotion"] * scale)

            result = {
                "audio_emotion": speech_emotion,
                "vocal_markers": vocal_markers(timing, voice, quality, words),
                "speech_detected": bool(timing.stretches),
                "duration_seconds": round(timing.recording_seconds, 3),
                "speech_timing": timing.summary(),
                "audio_quality": quality.as_dict() | {
                    "voiced_seconds": round(voice.voiced_seconds, 2) if voice else 0.0,
                    "pitch_range_hz": [voice.pitch_floor_hz, voice.pitch_ceiling_hz] if voice else None,
                    "voice_quality_seconds": voice.voice_quality_seconds if voice else 0.0,
                },
                "transcript": transcript,
                "answers": answers(timing, transcript, timeline, quality),
                "models": dict(self.models),
            }
            progress(1.0, "audio analysed")
            return result

    def _detect_speech(self, audio: AudioFile, progress: ProgressCallback, share: float
                       ) -> tuple[SpeechTiming, tuple[Segment, ...], np.ndarray]:
        """The speech timing, the stretches padded as silero pads them (for the model windows),
        and the power of each VAD window (for the signal-to-noise ratio)."""
        stream = self._vad.stream()
        probs, power = [], []
        chunks = max(1, -(-audio.frames // CHUNK_SAMPLES))
        for i, block in enumerate(audio.blocks(CHUNK_SAMPLES)):
            probs.append(stream.feed(block))
            power.append(window_power(block))
            progress(share * (i + 1) / chunks, f"detecting speech ({i + 1}/{chunks})")
        probs.append(stream.finish())
        probs = np.concatenate(probs)
        # Unpadded: silero pads each segment by 30 ms for transcription, which would
        # shorten every pause by 60 ms and lengthen the speech (bench/audio.py --validity).
        timing = speech_timing(speech_segments(probs, audio.frames, speech_pad_ms=0), audio.frames / SAMPLE_RATE)
        padded = speech_timing(speech_segments(probs, audio.frames), audio.frames / SAMPLE_RATE)
        return timing, padded.stretches, np.concatenate(power) if power else np.zeros(0)

    def _emotion(self, audio, windows, timing: SpeechTiming, progress, done, share) -> dict:
        model = self._emotion_model
        if model is None:
            return emotion.abstain(emotion.NOT_CONFIGURED)
        reason = emotion.not_assessable(timing.speech_seconds, timing.recording_seconds)
        if reason:
            return emotion.abstain(reason, model.name, model.validation)
        totals: dict[str, float] = {}
        weight = 0.0
        for i, (start, end, speech_seconds) in enumerate(windows):
            for label, p in model.classify(audio.read(start, end)).items():
                totals[label] = totals.get(label, 0.0) + p * speech_seconds
            weight += speech_seconds
            progress(done + share * (i + 1) / len(windows), f"classifying speech emotion ({i + 1}/{len(windows)})")
        return emotion.labelled(model, {label: total / weight for label, total in totals.items()})

    def _transcribe(self, audio, windows, progress, done, share, transcriber: Transcriber | None,
                    requested: bool, languages: tuple[str, ...]) -> dict:
        if transcriber is None:
            reason = ("transcription is off (AUDIO_TRANSCRIPT_ENABLED)" if self._transcriber is None
                      else "the transcript was not requested for this check-in")
            return {"enabled": False, "text": None, "segments": [], "model": None, "reason": reason,
                    "requested": requested}
        choice = self._language(audio, windows, languages)
        segments: list[dict] = []
        for i, (start, end, _speech) in enumerate(windows):
            segments += choice.transcriber.transcribe(audio.read(start, end), offset=start, language=choice.language)
            progress(done + share * (i + 1) / len(windows), f"transcribing ({i + 1}/{len(windows)})")
        reason = None
        if not windows:
            reason = "no speech detected"
        elif not segments:
            reason = "speech was detected but no words were recognised"
        return {"enabled": True, "text": " ".join(seg["text"] for seg in segments), "segments": segments,
                "model": choice.transcriber.name, "reason": reason, "requested": True,
                "language": choice.language, "language_probability": choice.probability,
                "language_detected": choice.detected, "languages_expected": list(languages),
                "language_note": choice.note}

    def _language(self, audio: AudioFile, windows, languages: tuple[str, ...]) -> LanguageChoice:
        """The model and language for this check-in; Whisper identifies the language on the first 30 s
        of speech (the speech windows' audio, pauses between windows left out)."""
        if not windows:  # nothing to identify or transcribe
            return LanguageChoice(self._transcriber, None, None, None, None)
        def identify() -> dict[str, float]:
            pieces, seconds = [], 0.0
            for start, end, _speech in windows:
                take = min(end - start, MAX_WINDOW_SECONDS - seconds)
                if take <= 0:
                    break
                pieces.append(audio.read(start, start + take))
                seconds += take
            return self._multilingual.detect_language(np.concatenate(pieces) if pieces else np.zeros(SAMPLE_RATE))

        return choose_language(languages, self._english, self._multilingual, identify)
