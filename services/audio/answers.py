"""Per-question markers: the check-in's audio split into the answer to each prompt.

Duration markers differ by speaking task (Cohen 2020; Parola 2023), and the time a
patient takes to start answering a question is a classic marker of alogia, so a
check-in with a timeline (``shared.domain.timeline``: when each prompt was shown) gets
its markers per answer, besides the whole-recording ones (``markers.py``):

- an answer's window is its prompt's window: from the moment the prompt appeared
  to the next step (``shared.domain.timeline.windows``); the VAD's stretches of speech
  (``timing.py``, unpadded) are cut at the window's edges, and the transcript's
  words go to the answer in whose window their middle falls;
- ``response_latency``: prompt shown to the first speech onset in the window (s);
- ``speaking_time`` (s), ``speaking_fraction`` (% of the window), ``pause_count``,
  ``pause_rate`` (per minute of speaking time) and ``speech_rate`` (transcript words
  per minute of speaking time): the whole-recording code (``markers.vocal_markers``)
  run on the answer's stretches;
- ``word_count``, ``mean_length_of_utterance`` (words per stretch of speech that
  holds words, stretches being speech between pauses of >= 0.25 s) and ``mattr``
  (moving-average type-token ratio, Covington & McFall 2010, over a window of
  ``MATTR_WINDOW`` words; not assessed on fewer words), from the transcript.

A marker is a finding only when its method was measured on synthesised check-ins
with known timings (``python -m bench.audio --answers --write`` stores the figures in
``answers_validity.json`` beside this module; docs/per-question-markers.md) and
passed ``validated_answer_markers``' rule (the word markers in the transcript languages
they were measured in), and the whole-recording method it reuses is validated too
(``markers.VALIDATED``). A check-in without a timeline keeps the
whole-recording markers, and its answers block says why there are no answers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from services.audio import markers as recording_markers
from services.audio.quality import AudioQuality
from services.audio.timing import SpeechTiming
from services.audio.vad import Segment
from shared.domain.markers import Marker, measured, not_assessed
from shared.domain.timeline import NO_TIMELINE_REASON, CheckinTimeline, StepWindow, windows

MATTR_WINDOW = 10  # words: spoken answers to one question are short (tens of words)
UNITS: Mapping[str, str] = {
    "response_latency": "s",
    "speaking_time": "s",
    "speaking_fraction": "%",
    "pause_count": "count",
    "pause_rate": "per min",
    "speech_rate": recording_markers.WORDS_PER_MIN,
    "word_count": "words",
    "mean_length_of_utterance": "words per utterance",
    "mattr": "ratio",
}
MARKERS = tuple(UNITS)
_IN_WINDOW = ", within the answer's window (prompt shown to the next step)"
METHODS: Mapping[str, str] = {
    "response_latency": "prompt shown (check-in timeline) to the first Silero VAD speech onset in the answer's window",
    "speaking_time": "Silero VAD speech time" + _IN_WINDOW,
    "speaking_fraction": "Silero VAD speech time / the answer's window",
    "pause_count": recording_markers.METHODS["pause_count"] + _IN_WINDOW,
    "pause_rate": recording_markers.METHODS["pause_rate"] + _IN_WINDOW,
    "speech_rate": recording_markers.WORDS_METHOD + _IN_WINDOW,
    "word_count": "transcript words whose middle falls in the answer's window",
    "mean_length_of_utterance": ("transcript words per utterance (a stretch of speech between pauses >= 0.25 s "
                                 "holding words)" + _IN_WINDOW),
    "mattr": (f"moving-average type-token ratio (Covington & McFall 2010) of the answer's transcript words, "
              f"window {MATTR_WINDOW} words"),
}
METHOD = ("the recording split at the check-in timeline's prompt times (shared.domain.timeline); Silero VAD speech and "
          "the transcript's words assigned to answers by time")
# The markers reused from the whole-recording code, and what they are called there.
_FROM_RECORDING = {"speaking_fraction": "speaking_fraction", "pause_count": "pause_count",
                   "pause_rate": "pause_rate", "speech_rate": "speech_rate"}
# Markers read from the transcript's words: valid only in the languages the bench measured them in.
WORD_MARKERS = ("speech_rate", "word_count", "mean_length_of_utterance", "mattr")

# The stored output of `python -m bench.audio --answers --write`.
VALIDITY_FILE = Path(__file__).with_name("answers_validity.json")
MAX_LATENCY_P90_S = 0.3  # response latency: 90 % of answers within this of the known latency
MIN_SEGMENTATION_ACCURACY = 0.9  # answers whose detected speech starts and ends where it was placed
SEGMENT_TOLERANCE_S = 0.3
MIN_MEASURED_SHARE = recording_markers.MIN_MEASURED_SHARE
MIN_CORRELATION = recording_markers.MIN_CORRELATION
NOT_VALIDATED = ("this per-answer marker's method has no measured validity yet "
                 "(python -m bench.audio --answers --write)")


def _language(row_key: str) -> str:
    """The transcript language of a bench row ("<condition>, <language>")."""
    return row_key.rsplit(", ", 1)[-1]


def validated_answer_markers(report: Mapping[str, Any]) -> dict[str, frozenset[str]]:
    """The per-answer markers a bench output shows measuring their known truth, each with the
    transcript languages it was shown to hold in ("*": any, for the VAD's markers, which do not
    read the words).

    Nothing passes unless the split itself does: in every row (condition and language), at least
    ``MIN_SEGMENTATION_ACCURACY`` of the answers' detected speech starts and ends within
    ``SEGMENT_TOLERANCE_S`` of where it was placed. Then a marker's row passes when it measured at
    least ``MIN_MEASURED_SHARE`` of its answers and, for response latency, 90 % of them within
    ``MAX_LATENCY_P90_S``, for the others with Pearson r >= ``MIN_CORRELATION`` against the truth.
    A VAD marker needs every row to pass; a word marker passes in each language all of whose rows pass.
    """
    segmentation = report.get("segmentation") or {}
    if not segmentation or not all(row["n"] > 0 and row["right"] >= MIN_SEGMENTATION_ACCURACY * row["n"]
                                   for row in segmentation.values()):
        return {}

    def passes(name: str, row: Mapping[str, Any]) -> bool:
        if not (row["n"] > 0 and row["measured"] >= MIN_MEASURED_SHARE * row["n"]):
            return False
        if name == "response_latency":
            return row.get("p90", float("inf")) <= MAX_LATENCY_P90_S
        return row.get("r", 0.0) >= MIN_CORRELATION

    passed: dict[str, frozenset[str]] = {}
    for name in MARKERS:
        rows = (report.get("markers") or {}).get(name) or {}
        if not rows:
            continue
        if name not in WORD_MARKERS:
            if all(passes(name, row) for row in rows.values()):
                passed[name] = frozenset({"*"})
            continue
        languages = {_language(key) for key in rows}
        good = frozenset(language for language in languages
                         if all(passes(name, row) for key, row in rows.items() if _language(key) == language))
        if good:
            passed[name] = good
    return passed


def load_validity(path: Path = VALIDITY_FILE) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


VALIDATED: dict[str, frozenset[str]] = validated_answer_markers(load_validity())


def answers(timing: SpeechTiming, transcript: dict[str, Any], timeline: CheckinTimeline | None,
            quality: AudioQuality) -> dict[str, Any]:
    """The audio artifact's ``answers`` block (the contract fusion and the console read)."""
    if timeline is None:
        return {"assessed": False, "reason": NO_TIMELINE_REASON, "method": METHOD, "flags": [], "items": []}
    split = windows(timeline, timing.recording_seconds)
    prompts = split.of_kind("prompt")
    if not prompts:
        return {"assessed": False, "method": METHOD, "flags": list(split.flags), "items": [],
                "reason": "the check-in's timeline shows no question within the recording"}
    words = _words(transcript)
    items = [_answer(window, timing, words, transcript, quality) for window in prompts]
    return {"assessed": True, "reason": None, "method": METHOD, "flags": list(split.flags), "items": items}


def _words(transcript: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The transcript's timed words, or None when there is no transcript."""
    if not transcript.get("enabled"):
        return None
    return [w for segment in transcript.get("segments") or [] for w in segment.get("words") or []]


def _answer(window: StepWindow, timing: SpeechTiming, every_word: list[dict] | None, transcript: dict[str, Any],
            quality: AudioQuality) -> dict[str, Any]:
    start, end = window.start_s, window.end_s
    stretches = tuple(Segment(max(s.start, start), min(s.end, end)) for s in timing.stretches
                      if s.end > start and s.start < end)
    flags = []
    if any(s.start < start < s.end for s in timing.stretches):
        flags.append("speech_began_before_prompt")
    if any(s.start < end < s.end for s in timing.stretches) and not window.clipped:
        flags.append("answer_runs_into_next_step")
    if window.clipped:
        flags.append("window_cut_at_recording_end")
    answer = SpeechTiming(stretches, end - start)
    words = None if every_word is None else [w for w in every_word if start <= (w["start"] + w["end"]) / 2 < end]
    whole = recording_markers.vocal_markers(answer, None, quality, len(words) if words else None)

    values: dict[str, dict] = {}
    for name in MARKERS:
        values[name] = _marker(name, answer, whole, words, transcript, flags, window_start=start)
    shown = None
    if words is not None:
        shown = {"text": " ".join(w["word"] for w in words), "language": transcript.get("language")}
    return {"step_id": window.step_id, "start_s": start, "end_s": end, "clipped": window.clipped,
            "markers": values, "transcript": shown}


def _marker(name: str, answer: SpeechTiming, whole: dict[str, dict], words: list[dict] | None,
            transcript: dict[str, Any], flags: list[str], *, window_start: float) -> dict:
    unit, method = UNITS[name], METHODS[name]
    if name not in VALIDATED:
        return not_assessed(unit, method, NOT_VALIDATED)
    speech = answer.speech_seconds
    if name in WORD_MARKERS and words is None:
        return not_assessed(unit, method, "there is no transcript for this check-in "
                                          f"({transcript.get('reason') or 'transcription is off'})")
    language = transcript.get("language")
    if name in WORD_MARKERS and "*" not in VALIDATED[name] and language not in VALIDATED[name]:
        return not_assessed(unit, method, f"its accuracy on transcripts in {language!r} has not been measured "
                                          f"(measured in {', '.join(sorted(VALIDATED[name]))})")
    if name in _FROM_RECORDING:
        found = Marker.model_validate(whole[_FROM_RECORDING[name]])
        if name == "speech_rate" and not words:
            return not_assessed(unit, method, "no words were transcribed in this answer")
        if not found.assessed:  # also where the whole-recording method is not validated
            return not_assessed(unit, method, found.reason or "not measured", flags)
        return measured(found.value, unit, method, [*found.quality_flags, *flags])
    short = ["short_speech"] if 0 < speech < recording_markers.SHORT_SPEECH_SECONDS else []
    if name == "response_latency":
        if not answer.stretches:
            return not_assessed(unit, method, f"no speech in this answer's {answer.recording_seconds:.1f} s")
        if "speech_began_before_prompt" in flags:
            return not_assessed(unit, method, "the patient was already speaking when the question appeared")
        return measured(round(answer.stretches[0].start - window_start, 2), unit, method, flags)
    if name == "speaking_time":
        return measured(round(speech, 2), unit, method, [*short, *flags])
    if name == "word_count":
        return measured(len(words), unit, method, flags)
    if not words:
        return not_assessed(unit, method, "no words were transcribed in this answer")
    if name == "mean_length_of_utterance":
        utterances = {_nearest(answer.stretches, (w["start"] + w["end"]) / 2) for w in words}
        return measured(round(len(words) / len(utterances), 2), unit, method, [*short, *flags])
    value = mattr([w["word"] for w in words])
    if value is None:
        return not_assessed(unit, method, f"only {len(_tokens([w['word'] for w in words]))} words; MATTR needs at "
                                          f"least {MATTR_WINDOW}")
    return measured(round(value, 3), unit, method, flags)


def _nearest(stretches: tuple[Segment, ...], moment: float) -> int:
    """The stretch of speech a word belongs to: the one holding its middle, else the closest."""
    if not stretches:
        return 0
    return min(range(len(stretches)), key=lambda i: max(stretches[i].start - moment, moment - stretches[i].end, 0.0))


def _tokens(words: list[str]) -> list[str]:
    return [token for word in words for token in re.findall(r"\w+(?:['’]\w+)*", word.lower())]


def mattr(words: list[str], window: int = MATTR_WINDOW) -> float | None:
    """Moving-average type-token ratio of `words` (lower-cased, punctuation dropped); None below `window` words."""
    tokens = _tokens(words)
    if len(tokens) < window:
        return None
    ratios = [len(set(tokens[i:i + window])) / window for i in range(len(tokens) - window + 1)]
    return sum(ratios) / len(ratios)
