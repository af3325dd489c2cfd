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

**Languages.** The screen has phrase lists for English and Spanish
(``PATTERNS_BY_LANGUAGE``). The Spanish list follows the wording of the C-SSRS
screener's Spanish version (Columbia Lighthouse Project, "Escala de Columbia
para evaluar el riesgo de suicidio", versión de detección): "¿Ha deseado estar
muerto(a) o poder dormirse y no despertar?", "¿Ha tenido realmente la idea de
suicidarse?", "¿...intenciones de actuar...?", "¿Ha hecho algo ... para terminar
con su vida?", said in the first person ("quiero morirme", "me quiero matar",
"quitarme la vida", "terminar con mi vida", "no quiero despertar"), and the same
four categories as in English. A transcript in any other language is
``assessed: false`` with the language named: never a silent pass. Misses and
false flags on synthesised statements: ``python -m bench.transcript --screen``
(docs/transcript.md).

Matching is on the lower-cased words with punctuation and accents removed
("suicidarme" and "suicidárme" match alike: Whisper's accents vary), whole words
only. Extending a list means adding a pattern and a test in
``tests/test_transcript_flags.py``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

METHOD = ("transcript phrase list v2 (C-SSRS, NICE NG225, HCR-20, MARS wording; English and Spanish; "
          "services/fusion/transcript_flags.py)")
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

_MEDICACION = r"(?:medicacion|medicaciones|medicamento|medicamentos|medicina|medicinas|pastilla|pastillas|pildoras?|inyeccion|inyecciones|antipsicoticos?|clozapina)"
_MI = r"(?:mi |mis |la |las |el |los |toda mi |todas mis )?"
_ALGUIEN = (r"(?:a alguien|a el|a ella|a ellos|a todos|a la gente|a mi (?:madre|padre|mama|papa|esposa|esposo|pareja|"
            r"hermano|hermana|hijo|hija|familia|vecino|vecina|medico|doctor|doctora|jefe))")
# Spanish (C-SSRS Spanish screener wording, first person), the same categories; matched without accents.
SPANISH_PATTERNS: tuple[tuple[str, str, str], ...] = (
    ("suicide", "matarme", r"\b(?:matarme|me (?:quiero|voy a|queria|pienso) matar|me mataria)\b"),
    ("suicide", "suicidarme", r"\b(?:suicidarme|suicidio|suicida|me (?:quiero|voy a) suicidar)\b"),
    ("suicide", "quitarme_la_vida", r"\b(?:quitarme|quitandome|acabar con|terminar con) (?:la|mi) (?:propia )?vida\b"),
    ("suicide", "quiero_morir", r"\b(?:quiero|quisiera|queria|deseo|desearia) morir(?:me)?\b"),
    ("suicide", "estar_muerto", r"\b(?:estar|estuviera|estaria) muert[oa]\b"),
    ("suicide", "no_quiero_vivir", r"\bno (?:quiero|quisiera) (?:vivir|seguir viviendo|despertar|despertarme)\b"),
    ("suicide", "no_vale_la_pena_vivir", r"\bno (?:vale la pena|tiene sentido) (?:vivir|seguir)\b"),
    ("self_harm", "hacerme_dano", r"\b(?:hacerme|me hago|me hice|me quiero hacer) (?:dano|heridas)\b"),
    # "me corté" is "I cut myself", "me corté el pelo" a haircut: an object after the verb is not self-harm
    ("self_harm", "cortarme",
     r"\b(?:cortarme|quemarme|lastimarme|me (?:corto|corte|quemo|queme|lastimo|lastime)\b(?! (?:el|la|los|las|un|una)\b))"),
    ("self_harm", "sobredosis", r"\bsobredosis\b"),
    ("harm_to_others", "matar_a_alguien", rf"\b(?:matar|mataria|voy a matar) {_ALGUIEN}\b"),
    ("harm_to_others", "hacer_dano_a_alguien",
     rf"\b(?:hacerle dano|hacer dano|lastimar|atacar|apunalar|disparar|pegarle|golpear) {_ALGUIEN}\b"),
    ("harm_to_others", "arma", r"\b(?:conseguir|consegui|comprar|compre) (?:un |una )?(?:pistola|arma|cuchillo)\b"),
    ("stopping_medication", "deje_la_medicacion",
     rf"\b(?:deje|dejo|he dejado|voy a dejar|dejar) (?:de tomar )?{_MI}{_MEDICACION}\b"),
    ("stopping_medication", "no_tomo", rf"\bno (?:me )?(?:tomo|tome|he tomado|estoy tomando|quiero tomar) {_MI}{_MEDICACION}\b"),
    ("stopping_medication", "tire", rf"\b(?:tire|tiro|he tirado) {_MI}{_MEDICACION}\b"),
    ("stopping_medication", "se_me_acabo", rf"\bse me (?:acabo|acabaron|termino|terminaron) {_MI}{_MEDICACION}\b"),
)
PATTERNS_BY_LANGUAGE = {"en": PATTERNS, "es": SPANISH_PATTERNS}
LANGUAGE_NAMES = {"en": "English", "es": "Spanish", "ms": "Malay", "id": "Indonesian", "fr": "French", "de": "German",
                  "pt": "Portuguese", "it": "Italian", "zh": "Chinese", "ar": "Arabic", "hi": "Hindi", "th": "Thai"}
_COMPILED = {language: tuple((category, name, re.compile(pattern)) for category, name, pattern in patterns)
             for language, patterns in PATTERNS_BY_LANGUAGE.items()}
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


def language_name(code: str | None) -> str:
    return f"{LANGUAGE_NAMES[code]} ({code})" if code in LANGUAGE_NAMES else f"language '{code}'"


def screen(transcript: dict[str, Any] | None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The flags found in a transcript, and what was screened (``transcript_screen``)."""
    transcript = transcript or {}
    # a transcript from before the multilingual model (tiny.en only) carries no language: English
    language = transcript.get("language") or "en"
    base = {"method": METHOD, "language": transcript.get("language"), "language_note": transcript.get("language_note"),
            "languages_covered": sorted(PATTERNS_BY_LANGUAGE)}
    if not transcript.get("enabled"):
        reason = transcript.get("reason") or "the check-in was not transcribed"
        return [], {"assessed": False, "reason": reason, **base}
    segments = transcript.get("segments") or []
    if not segments:
        return [], {"assessed": False, "reason": transcript.get("reason") or "no words were recognised", **base}
    if language not in _COMPILED:
        reason = (f"the speech was transcribed in {language_name(language)}, which the safety screen has no "
                  f"phrase list for (it covers {', '.join(language_name(c) for c in sorted(_COMPILED))}): "
                  "a clinician must read or hear it")
        return [], {"assessed": False, "reason": reason, **base}
    flags = []
    seen: set[tuple[str, float | None]] = set()
    for segment in segments:
        for flag in _flags_in(segment, _COMPILED[language]):
            key = (flag["category"], flag["start"])
            if key not in seen:  # two patterns of one category on the same words: one flag
                seen.add(key)
                flags.append(flag)
    return flags, {"assessed": True, "reason": None, **base}


def _flags_in(segment: dict[str, Any], compiled) -> Iterable[dict[str, Any]]:
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
    for category, name, pattern in compiled:
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
    # accents off (NFKD, combining marks dropped): "daño" -> "dano", "suicidárme" -> "suicidarme"
    decomposed = unicodedata.normalize("NFKD", word.lower())
    lowered = "".join(c for c in decomposed if not unicodedata.combining(c)).replace("\u2019", "'").replace("-", " ")
    return " ".join(_NOT_WORD.sub(" ", lowered).split())
