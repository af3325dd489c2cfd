"""The check-in page's view of a transcript in a language the safety screen does not cover (issue 21):
the screen's abstention is listed as not assessed, naming the language, never a silent pass."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from services.fusion.transcript_flags import screen
from services.results.console.views import checkin_view
from tests.browser.contract_items import checkin


def test_an_uncovered_language_shows_the_screen_as_not_assessed_and_the_transcript_language():
    transcript = {"enabled": True, "text": "Saya makan ubat setiap pagi.", "model": "whisper whisper-base",
                  "segments": [{"start": 0.5, "end": 2.0, "text": "Saya makan ubat setiap pagi.", "words": []}],
                  "language": "ms", "language_probability": 0.41, "reason": None}
    _flags, screened = screen(transcript)
    item = checkin({"transcript": transcript, "clinical_summary": {"transcript_screen": screened, "flags": []}})
    view = checkin_view(item, None, ZoneInfo("UTC"))
    missing = {entry.what: entry.reason for entry in view.not_assessed}
    assert "Malay (ms)" in missing["Safety screen of the transcript"]
    assert dict(view.methods)["Transcript"] == "whisper whisper-base, language ms (p 0.41)"
