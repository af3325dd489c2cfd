"""The alert rules on results shaped as issue 10 stores them."""

from __future__ import annotations

from datetime import datetime, timezone

from services.results.alerts.roster import RosterEntry
from services.results.alerts.rules import evaluate, missed_checkins
from shared.domain.clinics import AlertRules, ClinicDirectory, ClinicProfile
from shared.domain.patients import ClinicPatientId
from tests.browser.contract_items import as_stored, history

RULES = AlertRules()


def latest(items):
    """The newest check-in, as read back, and the ones before it, newest first."""
    parsed = as_stored(items)
    return parsed[-1], list(reversed(parsed[:-1]))


def test_a_high_risk_checkin_raises_a_risk_alert_with_its_evidence():
    item, earlier = latest(history("patient-101", "clinic-north", 4, risks=["low", "low", "low", "high"]))
    risk = [d for d in evaluate(item, earlier, RULES) if d.rule == "risk"]
    assert len(risk) == 1 and risk[0].severity == "high" and risk[0].job_id == item.job_id
    assert risk[0].patient_id == "patient-101" and isinstance(risk[0].patient_id, ClinicPatientId)
    assert "speech rate 116 syllables per min" in risk[0].summary
    assert risk[0].evidence["risk_evidence"][0]["factor"] == "speech_rate_below_baseline"
    # moderate risk is not alerted by default, but is when the clinic asks for it
    item, earlier = latest(history("patient-101", "clinic-north", 4))
    assert not [d for d in evaluate(item, earlier, RULES) if d.rule == "risk"]
    assert [d for d in evaluate(item, earlier, AlertRules(risk_levels=("moderate", "high"))) if d.rule == "risk"]


def test_missed_medication_fires_once_when_the_streak_is_reached():
    statuses = ["compliant", "non_compliant", "non_compliant", "non_compliant"]
    items = history("patient-101", "clinic-north", 4, statuses=statuses)
    fired = []
    for n in range(1, 5):
        item, earlier = latest(items[:n])
        fired.append([d for d in evaluate(item, earlier, RULES) if d.rule == "missed_medication"])
    assert [len(f) for f in fired] == [0, 0, 1, 0]  # reached at the third check-in, not repeated at the fourth
    assert fired[2][0].evidence["streak"] == 2 and fired[2][0].severity == "high"


def test_a_checkin_that_could_not_verify_intake_ends_a_missed_streak():
    items = history("patient-101", "clinic-north", 3, statuses=["non_compliant", "inconclusive", "non_compliant"])
    item, earlier = latest(items)
    assert not [d for d in evaluate(item, earlier, RULES) if d.rule == "missed_medication"]


def test_a_decline_is_only_a_marker_notably_worse_on_its_worse_side():
    items = history("patient-101", "clinic-north", 8)
    item, earlier = latest(items)
    decline = [d for d in evaluate(item, earlier, RULES) if d.rule == "baseline_decline"]
    assert len(decline) == 1
    names = {m["marker"] for m in decline[0].evidence["markers"]}
    assert {"speech_rate", "facial_expressivity", "pitch_variability"} <= names
    assert "pitch_mean" not in names and "head_movement" not in names  # no side is worse for these
    speech = next(m for m in decline[0].evidence["markers"] if m["marker"] == "speech_rate")
    assert speech["unit"] == "syllables per min" and speech["z_score"] < -2 and speech["baseline_mean"] > 150
    assert "rules_fired" not in speech  # a block written before the change rule: nothing invented
    assert not [d for d in evaluate(item, earlier, AlertRules(baseline_decline=False)) if d.rule == "baseline_decline"]
    rate = items[-1]["results"]["vocal_markers"]["speech_rate"]
    rate["baseline"] = {**rate["baseline"], "rules_fired": ["sustained_drift"], "rci": -1.2, "rci_threshold": 3.37,
                        "cusum": 5.9, "cusum_threshold": 4.82, "cusum_checkins": 3}
    item, earlier = latest(items)
    ruled = next(d for d in evaluate(item, earlier, RULES) if d.rule == "baseline_decline")
    speech = next(m for m in ruled.evidence["markers"] if m["marker"] == "speech_rate")
    assert {k: speech[k] for k in ("rules_fired", "cusum", "cusum_threshold", "cusum_checkins")} == {
        "rules_fired": ["sustained_drift"], "cusum": 5.9, "cusum_threshold": 4.82, "cusum_checkins": 3}


def test_transcript_flags_raise_an_alert():
    flags = [{"phrase": "no point going on", "category": "hopelessness", "start": 3.2}]
    item, earlier = latest(history("patient-101", "clinic-north", 2, flags=flags))
    flagged = [d for d in evaluate(item, earlier, RULES) if d.rule == "transcript_flag"]
    assert len(flagged) == 1 and flagged[0].evidence["flags"][0]["phrase"] == "no point going on"


def test_the_sweep_finds_patients_without_a_checkin_for_n_days():
    now = datetime(2026, 12, 20, 12, 0, tzinfo=timezone.utc)
    entries = [RosterEntry("c", ClinicPatientId("patient-late"), "2026-12-10T08:00:00.000000Z", "job-000000000001"),
               RosterEntry("c", ClinicPatientId("patient-recent"), "2026-12-18T08:00:00.000000Z", "job-000000000002")]
    drafts = missed_checkins(entries, AlertRules(no_checkin_days=7), now)
    assert [(d.patient_id, d.rule, d.evidence["days"]) for d in drafts] == [("patient-late", "no_checkin", 10)]
    assert drafts[0].trigger == "2026-12-10T08:00:00.000000Z"  # one alert per gap
    assert missed_checkins(entries, AlertRules(no_checkin_days=None), now) == []


def test_the_clinics_file_is_checked(tmp_path):
    path = tmp_path / "clinics.json"
    path.write_text('{"clinics": {"c1": {"timezone": "Europe/Berlin", "alerts": {"no_checkin_days": 3}}}}')
    directory = ClinicDirectory.from_file(path)
    assert directory.get("c1").timezone == "Europe/Berlin" and directory.get("c1").alerts.no_checkin_days == 3
    assert directory.get("unknown") == ClinicProfile()
    path.write_text('{"clinics": {"c1": {"timezone": "Mars/Olympus"}}}')
    try:
        ClinicDirectory.from_file(path)
    except ValueError as error:
        assert "unknown time zone 'Mars/Olympus'" in str(error)
    else:
        raise AssertionError("a bad time zone was accepted")
    path.write_text('{"clinics": {"c1": {"delivery": {"webhook": {"url": "https://x.example/h"}}}}}')
    try:
        ClinicDirectory.from_file(path)
    except ValueError as error:
        assert "exactly one of secret_file or secret_env" in str(error)
    else:
        raise AssertionError("a webhook without a secret was accepted")
