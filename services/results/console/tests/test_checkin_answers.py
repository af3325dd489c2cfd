"""The check-in page's answers (issue 21): each answer under its question in the clinic's own
words, its markers (with fusion's baseline where present) and transcript; a check-in without a
timeline lists the per-question markers as not assessed, with the reason."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from services.results.console.views import checkin_view
from shared.domain.clinics import CheckinScript, Step
from shared.domain.markers import measured, not_assessed
from shared.domain.timeline import NO_TIMELINE_REASON
from tests.browser.contract_items import checkin

LATENCY = measured(2.4, "s", "prompt shown to the first speech onset") | {
    "baseline": {"available": True, "checkins": 5, "mean": 1.1, "sd": 0.2, "notable": True, "direction": "higher"}}
ANSWERS = {"assessed": True, "reason": None, "method": "split at the timeline", "flags": [], "items": [
    {"step_id": "mood", "start_s": 0.0, "end_s": 8.5, "clipped": False,
     "markers": {"response_latency": LATENCY,
                 "mattr": not_assessed("ratio", "MATTR, window 10 words", "only 6 words; MATTR needs at least 10")},
     "transcript": {"text": "Me siento bien hoy", "language": "es"}},
    {"step_id": "pets", "start_s": 8.5, "end_s": 12.0, "clipped": True, "markers": {}, "transcript": None}]}


def _view(results: dict, script: CheckinScript | None = None):
    return checkin_view(checkin(results), None, ZoneInfo("UTC"), script)


def test_each_answer_is_shown_under_the_clinics_question_with_markers_and_transcript():
    script = CheckinScript(prompts=(Step(id="mood", text="¿Cómo ha estado su ánimo?"),))
    view = _view({"answers": ANSWERS, "transcript": {"enabled": True, "text": "x", "language": "es",
                                                     "language_probability": 0.85}}, script)
    mood, other = view.answers.items
    assert mood.question == "¿Cómo ha estado su ánimo?" and (mood.text, mood.language) == ("Me siento bien hoy", "es")
    latency, mattr = mood.readings
    assert (latency.label, latency.value, latency.unit) == ("Response latency", 2.4, "s")
    assert latency.baseline.mean == 1.1 and latency.baseline.notable is True
    assert mattr.value is None and "MATTR needs at least 10" in mattr.marker.reason
    assert other.question == "Question 'pets' (not in the clinic's script)" and other.clipped and other.text is None
    assert view.transcript_language == "es (Whisper p 0.85)"
    # the per-answer reasons stay in each answer's table, not in the page's not-assessed list
    assert not [n for n in view.not_assessed if "MATTR" in n.reason]


def test_the_default_script_names_the_question_and_no_timeline_is_listed_as_not_assessed():
    assert _view({"answers": ANSWERS}).answers.items[0].question == "How has your mood been since your last check-in?"
    view = _view({"answers": {"assessed": False, "reason": NO_TIMELINE_REASON, "method": "m", "flags": [],
                              "items": []}})
    assert {n.what: n.reason for n in view.not_assessed}["Per-question markers"] == NO_TIMELINE_REASON
    assert _view({}).answers is None  # no audio findings: nothing to split
