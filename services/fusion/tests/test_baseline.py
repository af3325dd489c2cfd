"""Each marker against the patient's own earlier check-ins, on generated histories."""

from __future__ import annotations

import pytest

from services.fusion.baseline import TRACKED, compare, findings_of, prediction_bound
from services.fusion.rules import clinical_summary, fuse
from services.fusion.settings import FusionSettings
from services.fusion.tests.checkins import STEADY_VOICE, VIDEO_UNITS, VOCAL_UNITS, audio, history, item, vision
from shared.markers import parse

SETTINGS = FusionSettings()


def steady(n: int, **voice: float) -> list[dict]:
    """n earlier check-ins; speech rate wobbles 200-220 syllables/min (sd about 8)."""
    rates = [200.0, 210.0, 220.0, 205.0, 215.0, 210.0, 200.0, 220.0, 210.0, 205.0]
    return history(*((audio(**{"speech_rate": rates[i % len(rates)], **voice}), vision()) for i in range(n)))


def block(baseline, section: str, name: str) -> dict:
    return baseline.markers[section][name]["baseline"]


def test_the_prediction_bound_follows_the_number_of_earlier_checkins():
    assert prediction_bound(3) == pytest.approx(4.303 * (4 / 3) ** 0.5, abs=1e-3)
    assert prediction_bound(10) == pytest.approx(2.262 * 1.1 ** 0.5, abs=1e-3)
    assert prediction_bound(100) == pytest.approx(1.984 * 1.01 ** 0.5, abs=3e-3)


def test_first_checkin_has_no_baseline_on_any_marker_and_raises_nothing():
    baseline = compare(findings_of(audio(), vision()), [], SETTINGS)
    assert baseline.report["available"] is False and baseline.factors == []
    assert "first check-in" in baseline.report["reason"]
    assert set(baseline.markers["vocal_markers"]) == set(VOCAL_UNITS)
    assert set(baseline.markers["video_markers"]) == set(VIDEO_UNITS)
    for section in ("vocal_markers", "video_markers"):
        for name, marker in baseline.markers[section].items():
            parsed = parse(marker)  # the shared shape, baseline block included
            assert parsed.baseline.available is False, name
            assert parsed.baseline.reason == "first check-in: no earlier check-ins to compare with", name


def test_a_notable_slowing_is_a_risk_factor_with_its_baseline_block():
    earlier = steady(6)
    baseline = compare(findings_of(audio(speech_rate=150.0), vision()), earlier, SETTINGS)
    rate = block(baseline, "vocal_markers", "speech_rate")
    mean, sd = 210.0, 7.0711  # of 200 210 220 205 215 210
    assert rate["available"] is True and rate["checkins"] == 6
    assert rate["mean"] == pytest.approx(mean) and rate["sd"] == pytest.approx(sd, abs=1e-3)
    assert rate["z_score"] == pytest.approx((150 - mean) / max(sd, TRACKED["speech_rate"].floor), abs=0.01)
    assert rate["relative_change"] == pytest.approx(-60 / 210, abs=1e-3)
    assert rate["notable"] is True and rate["direction"] == "lower"
    assert [(f.factor, f.severity) for f in baseline.factors] == [("speech_production_below_baseline", "moderate")]
    assert baseline.factors[0].evidence == ("speech rate 150 syllables per min, below the patient's usual 210 "
                                            "(sd 7.07, z -6.0, 6 earlier check-ins)")
    assert baseline.report["notable_changes"] == [{"marker": "speech_rate", "section": "vocal_markers",
                                                   "z_score": -6.0, "direction": "lower",
                                                   "risk_factor": "speech_production_below_baseline"}]
    other = block(baseline, "vocal_markers", "pitch_mean")
    assert other["available"] is True and other["notable"] is False and "direction" not in other


def test_inside_the_prediction_interval_is_not_notable():
    earlier = steady(6)
    bound = prediction_bound(6) * 10.0  # the floor (10 syllables/min) exceeds this history's sd
    inside = compare(findings_of(audio(speech_rate=210.0 - bound + 1), vision()), earlier, SETTINGS)
    outside = compare(findings_of(audio(speech_rate=210.0 - bound - 1), vision()), earlier, SETTINGS)
    assert block(inside, "vocal_markers", "speech_rate")["notable"] is False and inside.factors == []
    assert block(outside, "vocal_markers", "speech_rate")["notable"] is True


def test_a_very_steady_patient_does_not_turn_noise_into_a_change():
    earlier = history(*((audio(), vision()) for _ in range(5)))  # identical values: sd 0
    baseline = compare(findings_of(audio(speech_rate=STEADY_VOICE["speech_rate"] - 15), vision()), earlier, SETTINGS)
    rate = block(baseline, "vocal_markers", "speech_rate")
    assert rate["sd"] == 0.0 and rate["z_score"] == pytest.approx(-1.5) and rate["notable"] is False


def test_a_change_for_the_better_is_reported_but_not_scored():
    baseline = compare(findings_of(audio(speech_rate=300.0), vision()), steady(6), SETTINGS)
    assert block(baseline, "vocal_markers", "speech_rate")["direction"] == "higher"
    assert baseline.factors == [] and baseline.report["changes"][0].startswith("speech rate 300 syllables per min, above")


def test_context_markers_are_reported_never_scored():
    baseline = compare(findings_of(audio(pitch_mean=160.0, intensity=80.0), vision()), steady(5), SETTINGS)
    assert {c["marker"] for c in baseline.report["notable_changes"]} == {"pitch_mean", "intensity"}
    assert all(c["risk_factor"] is None for c in baseline.report["notable_changes"]) and baseline.factors == []


@pytest.mark.parametrize(("section", "changed", "factor"), [
    ("vocal_markers", {"speaking_fraction": 30.0}, "speech_production_below_baseline"),
    ("vocal_markers", {"pause_rate": 25.0}, "speech_production_below_baseline"),
    ("vocal_markers", {"mean_pause_duration": 1.6}, "speech_production_below_baseline"),
    ("vocal_markers", {"speech_rate": 150.0}, "speech_production_below_baseline"),
    ("vocal_markers", {"pitch_variability": 1.0}, "pitch_variability_below_baseline"),
    ("video_markers", {"facial_expressivity": 0.03}, "expressivity_below_baseline"),
    ("video_markers", {"head_movement": 1.0}, "head_movement_below_baseline"),
])
def test_each_validated_marker_worsening_is_its_risk_factor(section, changed, factor):
    earlier = history(*((audio(), vision()) for _ in range(5)))
    now = (audio(**changed), vision()) if section == "vocal_markers" else (audio(), vision(**changed))
    baseline = compare(findings_of(*now), earlier, SETTINGS)
    assert [f.factor for f in baseline.factors] == [factor]


def test_a_marker_measured_another_way_starts_a_new_baseline():
    earlier = steady(5)
    now = audio()
    now["vocal_markers"]["speech_rate"] = {**now["vocal_markers"]["speech_rate"], "unit": "words per min",
                                           "value": 140.0}
    rate = block(compare(findings_of(now, vision()), earlier, SETTINGS), "vocal_markers", "speech_rate")
    assert rate["available"] is False
    assert rate["reason"] == "measured the same way in 0 earlier check-in(s); a baseline needs 3"


def test_markers_of_older_versions_and_unmeasured_markers_are_left_out():
    older = [item({"vocal_markers": {"speech_rate": {"value": 3.0, "unit": "1/s"}}, "compliance": {}}, d)
             for d in (1, 2, 3)]
    baseline = compare(findings_of(audio(), vision()), older, SETTINGS)
    assert block(baseline, "vocal_markers", "speech_rate")["reason"].startswith("measured the same way in 0")
    old_shape = audio()
    old_shape["vocal_markers"]["f0_variability"] = {"value": 2.0, "unit": "semitones"}
    kept = compare(findings_of(old_shape, vision()), older, SETTINGS).markers["vocal_markers"]["f0_variability"]
    assert kept == {"value": 2.0, "unit": "semitones"}  # nothing is lost, nothing is invented
    now = audio(jitter=None)
    jitter = block(compare(findings_of(now, vision()), steady(5), SETTINGS), "vocal_markers", "jitter")
    assert jitter == {"available": False, "checkins": 0, "notable": False, "reason": "not measured in this check-in"}


def test_three_checkins_in_a_row_with_missed_medication_is_high_risk():
    earlier = history((audio(), vision(status="non_compliant")), (audio(), vision(status="non_compliant")),
                      (audio(), vision(status="compliant")))
    baseline = compare(findings_of(audio(), vision(status="non_compliant")), earlier, SETTINGS)
    assert baseline.report["missed_medication_streak"] == 3
    assert [f.factor for f in baseline.factors] == ["repeated_missed_medication"]
    broken = history((audio(), vision(status="non_compliant")), (audio(), vision(status="compliant")))
    assert compare(findings_of(audio(), vision(status="non_compliant")), broken, SETTINGS).factors == []


def test_runs_of_inconclusive_are_reported_and_runs_without_a_detector_are_not():
    inconclusive = history(*((audio(), vision(status="inconclusive")) for _ in range(4)))
    baseline = compare(findings_of(audio(), vision(status="inconclusive")), inconclusive, SETTINGS)
    assert baseline.factors == [] and baseline.report["inconclusive_medication_streak"] == 5
    assert baseline.report["changes"] == ["medication intake could not be verified in 5 check-ins in a row"]
    undetected = history(*((audio(), vision(status="not_assessed")) for _ in range(4)))
    quiet = compare(findings_of(audio(), vision(status="not_assessed")), undetected, SETTINGS)
    assert quiet.factors == [] and quiet.report["changes"] == []


def test_baseline_factors_set_the_risk_level_and_reach_the_summary():
    earlier = history(*((audio(), vision()) for _ in range(5)))
    a = audio(speech_rate=150.0, pause_rate=20.0, pitch_variability=1.0)
    v = vision(facial_expressivity=0.03)
    baseline = compare(findings_of(a, v), earlier, SETTINGS)
    fusion = fuse(a, v, ["audio", "vision"], {}, SETTINGS, baseline=(baseline.report, baseline.factors))
    # speech rate and pauses are one kind of change (speech production): one factor, both in its evidence
    assert fusion["risk_factors"] == ["speech_production_below_baseline", "pitch_variability_below_baseline",
                                      "expressivity_below_baseline"]
    production = fusion["risk_evidence"][0]["evidence"]
    assert production.startswith("pause rate 20 per min, above") and "; speech rate 150 syllables per min" in production
    assert fusion["risk_level"] == "high"  # three moderate factors
    only_speech = compare(findings_of(audio(speech_rate=150.0, pause_rate=20.0), vision()), earlier, SETTINGS)
    assert [f.factor for f in only_speech.factors] == ["speech_production_below_baseline"]
    assert fusion["baseline"]["previous_risk_levels"] == ["low"] * 5
    summary = clinical_summary(fusion, v["compliance"], "2026-03-01T00:00:00Z")
    assert summary["change_from_baseline"].startswith("Compared with the patient's last 5 check-in(s): pause rate")
    assert ("Discuss the change from the patient's usual check-ins with them and review negative symptoms"
            in summary["recommendations"])


def test_window_limits_how_far_back_the_baseline_reaches():
    settings = FusionSettings(baseline_window=3)
    earlier = history(*((audio(speech_rate=210.0), vision()) for _ in range(3)),
                      *((audio(speech_rate=400.0), vision()) for _ in range(5)))
    baseline = compare(findings_of(audio(speech_rate=210.0), vision()), earlier, settings)
    assert baseline.report["checkins_compared"] == 3 and baseline.factors == []
    assert block(baseline, "vocal_markers", "speech_rate")["mean"] == 210.0
