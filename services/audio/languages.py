"""Which language a check-in is transcribed in, and with which Whisper model.

A clinic names the languages its patients speak in the clinics file
(``SCHIZODOT_CLINICS_FILE``), as Whisper's codes::

    {"default": {"languages": ["en"]},
     "clinics": {"clinica-sur": {"languages": ["es", "en"]}, "klinik-kl": {"languages": ["ms", "en"]}}}

A clinic without ``languages`` gets the default entry's, else English. The
expected languages matter because Whisper's language identification is unsure
on short or accented speech (espeak-ng's Malay comes out as Thai at 0.91, its
Spanish as Spanish at only 0.62: docs/transcript.md): the check-in is
transcribed in the most probable of the clinic's languages, and the transcript
records what Whisper heard (``language_detected``) beside it.

- English only: Whisper tiny.en transcribes (faster than base, and as good on
  English: bench/transcript.py); base's language identification still runs when
  base is configured, and speech it finds to be another language (p >= 0.5) is
  transcribed by base in that language instead, with a note, rather than forced
  into English words.
- Any other set: Whisper base, in the most probable expected language.
- No multilingual model configured: tiny.en, and the transcript says English only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.domain.clinics import ClinicsFileError, read_clinics_file

DEFAULT_LANGUAGES = ("en",)
# An English-only clinic's check-in goes to the multilingual model when Whisper is at least this sure
# the speech is another language (faster-whisper's own language_detection_threshold).
SURE_NOT_ENGLISH = 0.5
LANGUAGE_ID_METHOD = "Whisper base language identification on the first 30 s of speech"


def _whisper_codes(codes: tuple[str, ...]) -> tuple[str, ...]:
    """The codes, each once, in order; a ValueError naming those Whisper does not know."""
    from services.audio.transcript import whisper_languages

    unknown = [code for code in codes if code not in whisper_languages()]
    if unknown:
        raise ValueError(f"unknown language codes {unknown}: use Whisper's codes (en, es, ms, ...)")
    return tuple(dict.fromkeys(codes))


class ClinicLanguages:
    """Each clinic's expected languages; a clinic without its own gets the default."""

    def __init__(self, default: tuple[str, ...] = DEFAULT_LANGUAGES,
                 clinics: dict[str, tuple[str, ...]] | None = None) -> None:
        self.default = default
        self._clinics = dict(clinics or {})

    @classmethod
    def from_file(cls, path: Path | None) -> "ClinicLanguages":
        """Read the clinics file's ``languages``; a malformed file or an unknown code stops the service
        at start-up, naming the setting."""
        if path is None:
            return cls()
        parsed = read_clinics_file(path)
        try:
            default = _whisper_codes(parsed.default.languages or DEFAULT_LANGUAGES)
            clinics = {cid: _whisper_codes(entry.languages) for cid, entry in parsed.clinics.items() if entry.languages}
        except ValueError as error:
            raise ClinicsFileError(f"the clinics file {path} cannot be used: {error}") from error
        return cls(default, clinics)

    def for_clinic(self, clinic_id: str | None) -> tuple[str, ...]:
        return self._clinics.get(clinic_id or "", self.default)


@dataclass(frozen=True)
class LanguageChoice:
    """What a check-in is transcribed with: the model, the language, and what identification said."""

    transcriber: object  # a Transcriber (analysis.Transcriber)
    language: str | None  # None: no speech, nothing transcribed
    probability: float | None  # Whisper's probability of `language`; None where nothing identified it
    detected: dict | None  # Whisper's most probable language over all it knows: {"language", "probability"}
    note: str | None


def choose_language(expected: tuple[str, ...], english, multilingual,
                    identify: Callable[[], dict[str, float]]) -> LanguageChoice:
    """The model and language for one check-in. `identify()` runs the multilingual model's language
    identification (only called where a multilingual model is configured)."""
    if multilingual is None:
        note = english.language_note
        if expected != ("en",):
            note = (f"the clinic expects {', '.join(expected)}, but no multilingual Whisper model is configured "
                    f"(AUDIO_WHISPER_MULTILINGUAL_MODEL_PATH): " + (note or "transcribed as English"))
        return LanguageChoice(english, "en", None, None, note)
    probabilities = identify()
    top = max(probabilities, key=probabilities.get)
    detected = {"language": top, "probability": round(probabilities[top], 3), "method": LANGUAGE_ID_METHOD}
    if expected == ("en",) and english is not None:
        if top != "en" and probabilities[top] >= SURE_NOT_ENGLISH:
            note = (f"the clinic expects English, but the speech was identified as {top} "
                    f"(p {probabilities[top]:.2f}) and was transcribed in {top}")
            return LanguageChoice(multilingual, top, round(probabilities[top], 3), detected, note)
        return LanguageChoice(english, "en", round(probabilities.get("en", 0.0), 3), detected, None)
    language = max(expected, key=lambda code: probabilities.get(code, 0.0))
    note = None
    if top not in expected:
        note = (f"Whisper heard {top} most likely (p {probabilities[top]:.2f}), a language the clinic does not "
                f"expect; transcribed in {language}, the most probable of the clinic's languages "
                f"({', '.join(expected)})")
    return LanguageChoice(multilingual, language, round(probabilities.get(language, 0.0), 3), detected, note)
