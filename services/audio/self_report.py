"""Self-report: what the patient said about taking the medication, classified by written rules.

The script's medication prompt (step id ``medication``: "Did you take your medication as
prescribed, or did you miss any doses?") is answered aloud. The answer is read from the
transcript's words inside the prompt's timeline window (``shared.domain.timeline``: from the
moment the prompt was shown to the next step), or from the whole transcript where the
check-in carries no timeline or no ``medication`` window; ``window_source`` says which
("timeline" | "whole_recording").

Method ``rules_v1`` (deterministic; the same words always give the same answer):

1. The words are lower-cased, stripped of punctuation, and contractions are split
   ("didn't" -> "did not", "I've" -> "i have").
2. Cue phrases are looked for, longest first, each word used once:
   - stop cues ("stopped taking", "quit", "gave up", "no longer take", "came off",
     "threw them away", ...);
   - miss cues ("missed", "forgot", "skipped", "ran out", ...);
   - take cues ("took", "taken", "take", "taking", "swallowed", "every dose", ...);
   - partial-dose cues ("half", "only some", "part of", "smaller dose", ...);
   - uncertainty cues ("not sure", "do not remember", "can not remember", "do not know").
   A negation ("not", "never", "no", "neither", "nor") within the three words before a
   cue flips it: a negated miss or stop is a take ("I didn't miss any", "I never stopped"),
   a negated take is a miss ("I haven't taken it") or, followed by "anymore"/"any more",
   a stop ("I'm not taking them anymore"). "Forgot to take" and "stopped taking" are one
   cue each: the take inside them is not counted.
3. The answer is, in this order: ``stopped`` when a stop cue stands (unless the answer
   says the patient started again: "again", "restarted", "back on", which makes it
   ``missed``); ``unclear`` when the patient says they are not sure; ``missed`` when a
   miss cue stands, or a partial dose was taken (``partial_dose`` true: a dose not taken
   as prescribed); ``taken`` when only take cues stand; ``unclear`` otherwise (no cue,
   or a bare "yes"/"no", which answers neither half of the question for certain).

Self-report is what the patient says, never observed intake: fusion carries it into
``compliance.self_report`` and its risk rules do not read it as verification. Its
accuracy on a labelled set of spoken answers (espeak-ng voices through Whisper tiny.en)
is measured by ``python -m bench.self_report`` (docs/self-report.md). Its rules are English:
a transcript in another language (the clinic's languages, services/audio/languages.py) gets
``assessed: false`` naming the language, never an English reading of foreign words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from shared.domain.timeline import CheckinTimeline, windows

STEP_ID = "medication"
METHOD = "rules_v1 (services/audio/self_report.py)"
Classification = Literal["taken", "missed", "stopped", "unclear"]
CLASSES: tuple[str, ...] = ("taken", "missed", "stopped", "unclear")
# Measured by `python -m bench.self_report` (docs/self-report.md): synthetic voices, not patients.
VALIDATION = {"set": "96 labelled answers spoken by 8 espeak-ng voices at 140-190 wpm, transcribed by Whisper tiny.en "
                     "(bench/self_report.py; synthetic voices, not patients)",
              "answers": 96, "accuracy": 0.927, "called_unclear": 29,
              "recall": {"taken": 0.833, "missed": 0.917, "stopped": 0.958, "unclear": 1.0},
              "measured": "2026-12-06, docs/self-report.md"}

_CONTRACTIONS = (
    (r"\bcan'?t\b", "can not"), (r"\bwon'?t\b", "will not"), (r"\bain'?t\b", "am not"),
    (r"n't\b", " not"), (r"'ve\b", " have"), (r"'m\b", " am"), (r"'re\b", " are"), (r"'ll\b", " will"),
    (r"'d\b", " would"), (r"'s\b", ""),
)
NEGATIONS = frozenset({"not", "never", "no", "neither", "nor", "nothing"})
NEGATION_REACH = 3  # words before a cue in which a negation flips it

# (kind, phrase) longest first within the matcher; a phrase is a tuple of words ("*" matches any one word).
_CUES: tuple[tuple[str, str], ...] = (
    ("stop", "stopped taking"), ("stop", "stop taking"), ("stop", "stopping"), ("stop", "stopped"),
    ("stop", "quit taking"), ("stop", "quit"), ("stop", "gave up"), ("stop", "given up"),
    ("stop", "no longer take"), ("stop", "no longer taking"), ("stop", "no longer"),
    ("stop", "came off"), ("stop", "come off"), ("stop", "coming off"), ("stop", "threw them away"),
    ("stop", "threw it away"), ("stop", "thrown them away"), ("stop", "decided not to take"),
    ("miss", "forgot to take"), ("miss", "forgotten to take"), ("miss", "forget to take"), ("miss", "forgot"),
    ("miss", "forgotten"), ("miss", "forget"), ("miss", "missed taking"), ("miss", "missed"), ("miss", "miss"),
    ("miss", "missing"), ("miss", "skipped taking"), ("miss", "skipped"), ("miss", "skip"), ("miss", "skipping"),
    ("miss", "ran out"), ("miss", "run out"), ("miss", "running out"),
    ("take", "took"), ("take", "taken"), ("take", "take"), ("take", "taking"), ("take", "takes"),
    ("take", "swallowed"), ("take", "every dose"), ("take", "every single dose"), ("take", "every day"),
    ("take", "as prescribed"), ("take", "had my"), ("take", "have my"), ("take", "remembered"),
    ("partial", "only took"), ("partial", "half"), ("partial", "halved"), ("partial", "only some"), ("partial", "only one of"),
    ("partial", "part of"), ("partial", "smaller dose"), ("partial", "lower dose"), ("partial", "less than"),
    ("partial", "cut the dose"), ("partial", "cut my dose"), ("partial", "reduced"),
    ("unsure", "not sure"), ("unsure", "do not remember"), ("unsure", "can not remember"),
    ("unsure", "could not remember"), ("unsure", "do not recall"), ("unsure", "do not know"), ("unsure", "no idea"),
    ("unsure", "not certain"),
)
_PHRASES = sorted(((kind, tuple(phrase.split())) for kind, phrase in _CUES), key=lambda c: -len(c[1]))
ANYMORE = (("anymore",), ("any", "more"))
RESUMED = frozenset({"again", "restarted", "resumed"})


@dataclass(frozen=True)
class Token:
    text: str
    source: int  # index of the transcript word it comes from


@dataclass
class Reading:
    classification: Classification
    words: list[str]
    partial_dose: bool = False
    cues: list[dict[str, Any]] = field(default_factory=list)


def tokens(words: list[str]) -> list[Token]:
    """The words, normalised (lower case, no punctuation, contractions split), each with its source."""
    out: list[Token] = []
    for index, word in enumerate(words):
        text = word.lower().replace("\u2019", "'")
        for pattern, replacement in _CONTRACTIONS:
            text = re.sub(pattern, replacement, text)
        for part in re.sub(r"[^a-z' ]+", " ", text).replace("'", "").split():
            out.append(Token(part, index))
    return out


def classify_words(words: list[str]) -> Reading:
    """The answer in `words` (the transcript's words, in order) by rules_v1."""
    toks = tokens(words)
    used = [False] * len(toks)
    found: list[tuple[int, int, str]] = []  # (start, end, kind) of each cue matched
    for start in range(len(toks)):
        for kind, phrase in _PHRASES:
            end = start + len(phrase)
            if end <= len(toks) and not any(used[start:end]) and all(
                    p == "*" or t.text == p for p, t in zip(phrase, toks[start:end])):
                found.append((start, end, kind))
                for i in range(start, end):
                    used[i] = True
                break
    found.sort()
    cues: list[dict[str, Any]] = []
    for start, end, kind in found:
        negator = next((i for i in range(max(0, start - NEGATION_REACH), start)
                        if toks[i].text in NEGATIONS and not used[i]), None)
        # "no longer" and "decided not to take" carry their own negation
        effective = kind
        if negator is not None and kind in ("stop", "miss"):
            effective = "take"
        elif negator is not None and kind == "take":
            after = [t.text for t in toks[end:end + 4]]
            effective = "stop" if any(tuple(after[i:i + len(a)]) == a for a in ANYMORE
                                      for i in range(len(after))) else "miss"
        elif negator is not None and kind == "partial":
            effective = "none"  # "not half", "no less than": no partial dose
        span = range(negator if negator is not None else start, end)
        cues.append({"kind": effective, "sources": sorted({toks[i].source for i in span})})
    kinds = [c["kind"] for c in cues]
    resumed = any(t.text in RESUMED for t in toks) or any(
        (toks[i].text, toks[i + 1].text) == ("back", "on") for i in range(len(toks) - 1))

    def rest_on(*wanted: str) -> list[str]:
        sources = sorted({s for c in cues if c["kind"] in wanted for s in c["sources"]})
        return [words[s] for s in sources]

    partial = "partial" in kinds
    if "stop" in kinds:
        if resumed:
            return Reading("missed", rest_on("stop"), cues=cues)
        return Reading("stopped", rest_on("stop"), cues=cues)
    if "unsure" in kinds:
        return Reading("unclear", rest_on("unsure"), cues=cues)
    if "miss" in kinds or partial:
        return Reading("missed", rest_on("miss", "partial"), partial_dose=partial, cues=cues)
    if "take" in kinds:
        return Reading("taken", rest_on("take"), cues=cues)
    return Reading("unclear", [], cues=cues)


def classify_text(text: str) -> Reading:
    return classify_words(text.split())


def answer_words(transcript: dict[str, Any], timeline: CheckinTimeline | None, duration_s: float
                 ) -> tuple[list[dict[str, Any]], str, str | None]:
    """The transcript's words of the medication answer, where they came from, and why (no window)."""
    every = [w for segment in transcript.get("segments") or [] for w in segment.get("words") or []]
    if timeline is None:
        return every, "whole_recording", "the check-in carries no timeline"
    window = windows(timeline, duration_s).get(STEP_ID)
    if window is None:
        return every, "whole_recording", f"the timeline has no {STEP_ID!r} step within the recording"
    inside = [w for w in every if window.start_s <= (w["start"] + w["end"]) / 2 < window.end_s]
    return inside, "timeline", None


def self_report(transcript: dict[str, Any] | None, timeline: CheckinTimeline | None, duration_s: float) -> dict:
    """The `self_report` block of the audio findings."""
    base = {"classification": None, "words": [], "answer": None, "partial_dose": False, "method": METHOD,
            "window_source": None, "window_note": None, "assessed": False, "observed": False,
            "validation": VALIDATION}
    if not transcript or not transcript.get("enabled"):
        reason = (transcript or {}).get("reason") or "there is no transcript"
        return base | {"reason": f"no transcript, so the spoken answer was not read ({reason})"}
    language = transcript.get("language") or "en"
    if language != "en":
        return base | {"reason": f"the answer was spoken in {language!r}; the self-report rules cover English only"}
    words, source, note = answer_words(transcript, timeline, duration_s)
    base |= {"window_source": source, "window_note": note}
    if not words:
        where = "in the medication prompt's window" if source == "timeline" else "in the recording"
        return base | {"reason": f"no words were transcribed {where}"}
    reading = classify_words([w["word"] for w in words])
    reason = ("self-reported by the patient, not observed"
              if reading.classification != "unclear" else
              "the answer did not say clearly whether the medication was taken, missed or stopped")
    return base | {"classification": reading.classification, "words": reading.words,
                   "answer": " ".join(w["word"] for w in words), "partial_dose": reading.partial_dose,
                   "assessed": True, "reason": reason}
