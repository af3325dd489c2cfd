"""Change from the patient's own baseline, on generated histories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from services.fusion.baseline import compare, findings_of
from services.fusion.rules import clinical_summary, fuse
from services.fusion.settings import FusionSettings

SETTINGS = FusionSettings()


def results(activity: float | None = 0.08, speech_rate: float | None = 3.0, f0: float | None = 3.0,
            status: str = "inconclusive", risk: str = "moderate") -> dict:
    """A SchizodotUsers item's `results`, with the fields the baseline reads."""
    return {
        "facial_emotion": {"face_detected": activity is not None, "expressivity": {"blendshape_activity": activity}},
        "vocal_markers": {"speech_rate": {"value": speech_rate, "unit": "1/s"},
                          "f0_variability": {"value": f0, "unit": "semitones"}},
        "compliance": {"verification_status": status},
        "multimodal_fusion": {"risk_level": risk},
    }


def history(*entries: dict) -> list[dict]:
    """Items newest first, one day apart, as PatientHistory.latest returns them."""
    now = datetime(2026, 3, 1, tzinfo=timezone.utc)
    return [{"user_id": "patient-001", "job_id": f"job-{i:012x}",
             "timestamp": (now - timedelta(days=i + 1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "results": r}
            for i, r in enumerate(entries)]


def test_first_checkin_has_no_baseline_and_says_so():
    baseline = compare(results(), [], SETTINGS)
    assert baseline.report["available"] is False and baseline.factors == []
    assert "first check-in" in baseline.report["reason"]
    fusion = fuse(None, None, [], {}, SETTINGS, baseline=(baseline.report, baseline.factors))
    summary = clinical_summary(fusion, None, "2026-03-01T00:00:00Z")
    assert summary["change_from_baseline"] == "First check-in: no baseline yet to compare with"


def test_expressivity_well_below_the_patients_own_average_is_flagged():
    earlier = history(*(results(activity=a) for a in (0.10, 0.08, 0.09, 0.11, 0.07)))  # mean 0.09
    drop = compare(results(activity=0.09 * (1 - SETTINGS.baseline_change_fraction)), earlier, SETTINGS)
    small = compare(results(activity=0.09 * (1 - SETTINGS.baseline_change_fraction) + 0.001), earlier, SETTINGS)
    assert [f.factor for f in drop.factors] == ["expressivity_below_baseline"]
    assert drop.factors[0].severity == "moderate"
    assert "facial expressivity 40% below the patient's own average" in drop.report["changes"][0]
    expressivity = next(c for c in drop.report["comparisons"] if c["marker"] == "expressivity")
    assert expressivity["baseline_mean"] == 0.09 and expressivity["baseline_checkins"] == 5
    assert small.factors == [] and not any("expressivity" in c for c in small.report["changes"])
    # An expressive patient's flat day is a change even above the absolute flat-affect threshold.
    assert 0.09 * 0.6 > SETTINGS.flat_affect_max_activity


def test_higher_than_usual_is_not_a_worsening():
    earlier = history(*(results(speech_rate=2.0) for _ in range(4)))
    baseline = compare(results(speech_rate=4.0), earlier, SETTINGS)
    rate = next(c for c in baseline.report["comparisons"] if c["marker"] == "speech_rate")
    assert rate["relative_change"] == 1.0 and rate["flagged"] is False and baseline.factors == []


def test_speech_rate_and_pitch_variability_drops():
    earlier = history(*(results(speech_rate=3.0, f0=3.0) for _ in range(3)))
    baseline = compare(results(speech_rate=1.5, f0=1.2), earlier, SETTINGS)
    assert {f.factor: f.severity for f in baseline.factors} == {
        "speech_rate_below_baseline": "moderate", "pitch_variability_below_baseline": "low"}


def test_too_few_earlier_measurements_compare_nothing_and_say_why():
    earlier = history(results(activity=0.1), results(activity=None))  # the second had no face
    baseline = compare(results(activity=0.01), earlier, SETTINGS)
    assert baseline.report["available"] is True and baseline.report["checkins_compared"] == 2
    expressivity = next(c for c in baseline.report["comparisons"] if c["marker"] == "expressivity")
    assert expressivity["flagged"] is False
    assert expressivity["note"] == "measured in 1 earlier check-in(s); a baseline needs 3"


def test_three_checkins_in_a_row_with_missed_medication_is_high_risk():
    earlier = history(results(status="non_compliant"), results(status="non_compliant"), results(status="compliant"))
    baseline = compare(results(status="non_compliant"), earlier, SETTINGS)
    assert baseline.report["missed_medication_streak"] == 3
    assert [f.factor for f in baseline.factors] == ["repeated_missed_medication"]
    assert "medication seen not taken in 3 check-ins in a row" in baseline.report["changes"]
    # Two in a row (a compliant check-in breaks the run) is not a streak yet.
    broken = history(results(status="non_compliant"), results(status="compliant"), results(status="non_compliant"))
    assert compare(results(status="non_compliant"), broken, SETTINGS).factors == []


def test_unverified_runs_are_reported_but_are_no_risk_factor():
    earlier = history(*(results(status="inconclusive") for _ in range(4)))
    baseline = compare(results(status="inconclusive"), earlier, SETTINGS)
    assert baseline.factors == [] and baseline.report["unverified_medication_streak"] == 5
    assert baseline.report["changes"] == ["medication intake not verified in 5 check-ins in a row"]


def test_baseline_factors_count_toward_the_risk_level_and_reach_the_summary():
    earlier = history(*(results(activity=0.1, speech_rate=3.0, risk="low") for _ in range(5)))
    audio = {"audio_emotion": {"primary_emotion": "neutral", "confidence": 0.8, "assessed": True,
                               "all_emotions": [{"emotion": "neutral", "confidence": 0.8}]},
             "vocal_markers": {"speech_rate": {"value": 1.0}, "f0_variability": {"value": 3.0},
                               "pause_ratio": {"value": 0.1}},
             "speech_detected": True, "duration_seconds": 10.0}
    vision = {"facial_emotion": {"primary_emotion": "neutral", "confidence": 0.8, "face_detected": True,
                                 "all_emotions": [{"emotion": "neutral", "confidence": 0.8}],
                                 "expressivity": {"blendshape_activity": 0.04}},
              "compliance": {"verification_status": "inconclusive", "reason": "pill detection is not configured"}}
    baseline = compare(findings_of(audio, vision), earlier, SETTINGS)
    fusion = fuse(audio, vision, ["audio", "vision"], {}, SETTINGS, baseline=(baseline.report, baseline.factors))
    # Not flat by the absolute threshold, but well below this patient's usual; speech slower than usual.
    assert set(fusion["risk_factors"]) == {"medication_intake_unverified", "expressivity_below_baseline",
                                           "speech_rate_below_baseline"}
    assert fusion["risk_level"] == "high"  # three moderate factors
    assert fusion["baseline"]["previous_risk_levels"] == ["low"] * 5
    summary = clinical_summary(fusion, vision["compliance"], "2026-03-01T00:00:00Z")
    assert summary["change_from_baseline"].startswith("Compared with the patient's last 5 check-in(s): facial expressivity")
    assert "Discuss the change from the patient's usual check-ins with them" in summary["recommendations"]


def test_window_limits_how_far_back_the_baseline_reaches():
    settings = FusionSettings(baseline_window=3)
    earlier = history(*(results(activity=0.1) for _ in range(3)), *(results(activity=1.0) for _ in range(5)))
    baseline = compare(results(activity=0.1), earlier, settings)
    assert baseline.report["checkins_compared"] == 3 and baseline.factors == []
