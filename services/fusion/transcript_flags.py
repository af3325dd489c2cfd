"""Statements in the transcript a clinician must see: a documented phrase list, never a model.

When the audio stage transcribed the check-in (``AUDIO_TRANSCRIPT_ENABLED``),
every phrase below that occurs in it becomes a flag in ``clinical_summary.flags``
with the quoted words, their time in the recording and the sentence around
them. A flag is a high risk factor and is worded "for clinician review, not a
diagnosis": a phrase list cannot tell "I want to hurt myself" from "I would
never hurt myself", and it does not try to. Negations, quotations and past
tense are left for the clinician to hear, because missing a real statement costs
more than reading a harmless one.

Where the phrases come from (each is the everyday wording of an item clinicians
already ask about, not a list invented here):

- **suicide**: the ideation items of the Columbia Suicide Severity Rating Scale
  screener (Posner et al. 2011, Am J Psychiatry 168:1266): wishing to be dead,
  thoughts of killing oneself, intent, plans ("wish I were dead", "kill myself",
  "end my life", "better off dead", "no reason to live").
- **self_harm**: the acts named in NICE guideline NG225, Self-harm (2022):
  cutting, burning, overdosing, hurting or harming oneself.
- **harm_to_others**: threats of violence as violence-risk screens record them
  (HCR-20 V3 "violent ideation or intent"): killing, hurting, attacking,
  stabbing or shooting someone, getting a weapon.
- **stopping_medication**: non-adherence as the Medication Adherence Rating
  Scale (Thompson et al. 2000, Schizophr Res 42:241) and the Brief Adherence
  Rating Scale phrase it: stopping, skipping, quitting, refusing, throwing away
  or running out of the medication.

Only English is transcribed (Whisper tiny.en), so only English is screened; the
screen says so (``transcript_screen.language_note``). Matching is on the
lower-cased words with punctuation removed, whole words only. Extending a list
means adding a pattern and a test in ``tests/test_transcript_flags.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

METHOD = "transcript phrase list v1 (C-SSRS, NICE NG225, HCR-20, MARS wording; services/fusion/transcript_flags.py)"
NOTE = "for clinician review, not a diagnosis"
SEVERITY = "high"

_MEDICATION = r"(?:medication|medications|medicine|medicines|meds|pills|tablets|tablet|injection|injections|depot|antipsychotics?|clozapine)"
_MY = r"(?:my |the |those |these |all my |all the )?"
# People only: "hurt my back" or "kill the time" are not threats.
_SOMEONE = (r"(?:him|her|them|you|someone|somebody|anyone|anybody|everyone|everybody|people|"
            r"(?:my|his|her|their|the) (?:mother|father|mum|mom|dad|wife|husband|partner|brother|sister|son|"
            r"daughter|children|kids|family|neighbour|neighbours|neighbor|neighbors|doctor|nurse|boss))")

# (category, name, pattern); patterns are matched on lower-cased words joined by single spaces.
PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("suicide", "kill_myself", r"\bkill(?:ing)? myself\b"),
    ("suicide", "end_my_life", r"\b(?:end|ending|take|taking) my (?:own )?life\b"),
    ("suicide", "suicide", r"\bsuicid(?:e|al)\b"),
    ("suicide", "want_to_die", r"\b(?:want|wanted|wanna|going) (?:to )?die\b"),
    ("suicide", "wish_dead", r"\bwish (?:i|i'd) (?:was|were|had been|be) dead\b"),
    ("suicide", "better_off_dead", r"\bbetter off dead\b"),
    ("suicide", "not_want_to_live", r"\b(?:don't|do not|dont) want to (?:live|be alive|be here|wake up)\b"),
    ("suicide", "no_reason_to_live", r"\bno (?:reason|point) (?:to|in) (?:live|living|go on|going on)\b"),
    ("self_harm", "hurt_myself", r"\b(?:hurt|hurting|harm|harming|cut|cutting|burn|burning) myself\b"),
    ("self_harm", "self_harm", r"\bself (?:harm|harming|injury)\b"),
    ("self_harm", "overdose", r"\boverdos(?:e|ed|ing)\b"),
    ("harm_to_others", "kill_someone", rf"\bkill(?:ing)? {_SOMEONE}\b"),
    ("harm_to_others", "hurt_someone", rf"\b(?:hurt|hurting|harm|harming|attack|attacking|stab|stabbing|shoot|shooting|beat up) {_SOMEONE}\b"),
    ("harm_to_others", "weapon", r"\b(?:get|got|buy|bought) (?:a )?(?:gun|knife|weapon)\b"),
    ("stopping_medication", "stop_medication",
     rf"\b(?:stop|stopped|stopping|quit|quitting|skip|skipped|skipping|refuse|refused|refusing) (?:taking )?{_MY}{_MEDICATION}\b"),
    ("stopping_medication", "not_taking", rf"\b(?:not|no longer|never|don't|dont|didn't|didnt) (?:been )?tak(?:e|ing) {_MY}{_MEDICATION}\b"),
    ("stopping_medication", "threw_away", rf"\b(?:threw|throw|throwing|flushed|flush) (?:away )?{_MY}{_MEDICATION}\b"),
    ("stopping_medication", "ran_out", rf"\b(?:ran|run|running) out of {_MY}{_MEDICATION}\b"),
    ("stopping_medication", "off_medication", rf"\boff {_MY}{_MEDICATION}\b"),
)
_COMPILED = tuple((category, name, re.compile(pattern)) for category, name, pattern in PATTERNS)
CATEGORY_WORDS = {"suicide": "suicide", "self_harm": "self-harm", "harm_to_others": "harm to others",
                  "stopping_medication": "stopping medication"}
# "self-harm" and "don't" keep their inside characters; everything else that is not a letter or digit goes.
_NOT_WORD = re.compile(r"[^a-z0-9']+")


@dataclass(frozen=True)
class _Word:
    text: str  # as transcribed
    norm: str
    start: float | None
    end: float | None


def screen(transcript: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The flags found in a transcript, and what was screened (``transcript_screen``)."""
    transcript = transcript or {}
    base = {"method": METHOD, "language": transcript.get("language"), "language_note": transcript.get("language_note")}
    if not transcript.get("enabled"):
        reason = transcript.get("reason") or "the check-in was not transcribed"
        return [], {"assessed": False, "reason": reason, **base}
    segments = transcript.get("segments") or []
    if not segments:
        return [], {"assessed": False, "reason": transcript.get("reason") or "no words were recognised", **base}
    flags = []
    seen: set[tuple[str, float | None]] = set()
    for segment in segments:
        for flag in _flags_in(segment):
            key = (flag["category"], flag["start"])
            if key not in seen:  # two patterns of one category on the same words: one flag
                seen.add(key)
                flags.append(flag)
    return flags, {"assessed": True, "reason": None, **base}


def _flags_in(segment: dict[str, Any]) -> Iterable[dict[str, Any]]:
    words = [_Word(w["word"], norm, w.get("start"), w.get("end"))
             for w in segment.get("words") or [] if (norm := _normalise(w.get("word", "")))]
    if not words:  # no word timings: the segment's own text and times
        words = [_Word(t, _normalise(t), segment.get("start"), segment.get("end"))
                 for t in str(segment.get("text", "")).split() if _normalise(t)]
    text, offsets = "", []
    for word in words:
        for piece in word.norm.split():
            offsets.append((len(text), word))
            text += piece + " "
    for category, name, pattern in _COMPILED:
        for match in pattern.finditer(text):
            covered = [w for at, w in offsets if match.start() <= at < match.end()]
            unique = list(dict.fromkeys(id(w) for w in covered))
            quoted = [next(w for w in covered if id(w) == i) for i in unique]
            yield {
                "category": category,
                "phrase": " ".join(w.text for w in quoted),
                "context": str(segment.get("text", "")).strip(),
                "start": quoted[0].start,
                "end": quoted[-1].end,
                "pattern": f"{category}/{name}",
                "severity": SEVERITY,
                "note": NOTE,
            }


def _normalise(word: str) -> str:
    lowered = word.lower().replace("\u2019", "'").replace("-", " ")
    return " ".join(_NOT_WORD.sub(" ", lowered).split())
