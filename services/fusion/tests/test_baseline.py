"""Each marker against the patient's own earlier check-ins, on generated histories."""

from __future__ import annotations

import math
import statistics

import pytest

from services.fusion.baseline import ERRORS, TRACKED, earlier_results, prediction_bound, spread_floor
from services.fusion.baseline import compare as typed_compare
from services.fusion.baseline import findings_of as typed_findings_of
from services.fusion.change import RULE, cusum_threshold, rci_threshold
from services.fusion.rules import clinical_summary, fuse
from services.fusion.settings import FusionSettings
from services.fusion.tests.checkins import (
    STEADY_VOICE,
    VIDEO_UNITS,
    VOCAL_UNITS,
    as_audio,
    as_vision,
    audio,
    history,
    item,
    markers,
    vision,
)
from shared.domain.markers import parse

SETTINGS = FusionSettings()


def findings_of(audio_document: dict | None, vision_document: dict | None) -> dict:
    """`findings_of` on the stage documents as fusion reads them from their artifacts."""
    return typed_findings_of(as_audio(audio_document), as_vision(vision_document))


def compare(current, items: list[dict], settings: FusionSettings):
    """`compare` on earlier items as fusion reads them: stored items parsed once (`earlier_results`)."""
    return typed_compare(current, earlier_results(items, "job-now", settings.baseline_window), settings)


def steady(n: int, **voice: float) -> list[dict]:
    """n earlier check-ins; speech rate wobbles 200-220 syllables/min (sd about 8)."""
    rates = [200.0, 210.0, 220.0, 205.0, 215.0, 210.0, 200.0, 220.0, 210.0, 205.0]
    return history(*((audio(**{"speech_rate": rates[i % len(rates)], **voice}), vision()) for i in range(n)))


def block(baseline, section: str, name: str) -> dict:
    return baseline.markers[section][name]["baseline"]


def test_the_former_rules_prediction_bound_follows_the_number_of_earlier_checkins():  # bench/change.py compares it
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


def test_a_notable_slowing_is_a_reliable_change_named_with_its_figures():
    earlier = steady(8)
    baseline = compare(findings_of(audio(speech_rate=150.0), vision()), earlier, SETTINGS)
    rate = block(baseline, "vocal_markers", "speech_rate")
    values = [200.0, 210.0, 220.0, 205.0, 215.0, 210.0, 200.0, 220.0]
    assert rate["available"] is True and rate["checkins"] == 8 and rate["measurable"] is True
    assert rate["mean"] == pytest.approx(statistics.fmean(values)) and rate["sd"] == pytest.approx(
        statistics.stdev(values), abs=1e-3)  # the console's usual band
    floor, source = spread_floor("speech_rate", TRACKED["speech_rate"])
    assert floor == pytest.approx(ERRORS["speech_rate"].sd) and source.startswith("measurement error 10.1")
    centre = statistics.median(values)  # 210
    robust = statistics.fmean(abs(v - centre) for v in values) * math.sqrt(math.pi / 2)  # 7.8: below the floor
    assert rate["centre"] == centre and rate["spread"] == pytest.approx(max(robust, floor), abs=1e-3)
    rci = (150 - centre) / (floor * math.sqrt(1 + math.pi / 16))
    assert rate["rci"] == pytest.approx(rci, abs=0.01) and rate["rci_threshold"] == rci_threshold(8, RULE.rci_false_alerts)
    assert rate["rules_fired"][0] == "reliable_change" and rate["notable"] is True and rate["direction"] == "lower"
    assert rate["rule"] == RULE.name and rate["spread_floor"] == pytest.approx(floor, abs=1e-3)
    assert [(f.factor, f.severity) for f in baseline.factors] == [("speech_production_below_baseline", "moderate")]
    assert baseline.factors[0].evidence.startswith(
        f"speech rate 150 syllables per min, below the patient's usual 210 (spread 10.1, 8 earlier check-ins): "
        f"reliable change, RCI {rci:+.1f} (threshold {rate['rci_threshold']:.2f})")
    assert baseline.report["notable_changes"][0] == {
        "marker": "speech_rate", "section": "vocal_markers", "z_score": rate["z_score"], "direction": "lower",
        "rules_fired": rate["rules_fired"], "risk_factor": "speech_production_below_baseline"}
    other = block(baseline, "vocal_markers", "pitch_mean")
    assert other["available"] is True and other["notable"] is False and "direction" not in other
    assert other["rules_fired"] == [] and other["rci"] is not None


def test_ordinary_wobble_of_a_steady_patient_is_not_a_change():
    # Five near-identical check-ins (SD 0.01): the spread is floored (the larger of the measured error and the
    # least change that matters), so the SD's smallness cannot turn a wobble of 2.5 % into a change.
    earlier = history(*((audio(pitch_variability=v), vision()) for v in (2.40, 2.41, 2.39, 2.40, 2.42)))
    wobble = compare(findings_of(audio(pitch_variability=2.34), vision()), earlier, SETTINGS)
    pitch = block(wobble, "vocal_markers", "pitch_variability")
    assert pitch["notable"] is False and wobble.factors == [] and wobble.report["changes"] == []
    assert pitch["spread"] == pytest.approx(0.2) and abs(pitch["rci"]) < 1
    steady_rate = history(*((audio(), vision()) for _ in range(5)))  # identical values: sd 0
    rate = block(compare(findings_of(audio(speech_rate=STEADY_VOICE["speech_rate"] - 15), vision()), steady_rate,
                         SETTINGS), "vocal_markers", "speech_rate")
    assert rate["sd"] == 0.0 and rate["notable"] is False and rate["rci"] == pytest.approx(
        -15 / (ERRORS["speech_rate"].sd * math.sqrt(1 + math.pi / 10)), abs=0.01)


def test_the_threshold_is_reached_exactly_where_the_rule_says():
    earlier = steady(8)
    floor, _ = spread_floor("speech_rate", TRACKED["speech_rate"])
    edge = rci_threshold(8, RULE.rci_false_alerts) * floor * math.sqrt(1 + math.pi / 16)
    inside = compare(findings_of(audio(speech_rate=210.0 - edge + 0.5), vision()), earlier, SETTINGS)
    outside = compare(findings_of(audio(speech_rate=210.0 - edge - 0.5), vision()), earlier, SETTINGS)
    assert block(inside, "vocal_markers", "speech_rate")["notable"] is False and inside.factors == []
    assert block(outside, "vocal_markers", "speech_rate")["rules_fired"][0] == "reliable_change"


def test_a_sustained_drift_that_no_single_checkin_shows_is_flagged_by_the_cusum():
    slower = [185.0, 185.0]  # the two latest earlier check-ins, newest first, then the usual ones
    earlier = history(*((audio(speech_rate=r), vision()) for r in
                        slower + [200.0, 210.0, 220.0, 205.0, 215.0, 210.0, 200.0, 220.0]))
    baseline = compare(findings_of(audio(speech_rate=185.0), vision()), earlier, SETTINGS)
    rate = block(baseline, "vocal_markers", "speech_rate")
    assert rate["rci"] > -rate["rci_threshold"]  # no single check-in is a reliable change ...
    floor = ERRORS["speech_rate"].sd
    z = (185.0 - 210.0) / floor  # the older 8 check-ins' median and (floored) spread
    assert rate["cusum"] == pytest.approx(3 * (-z - RULE.cusum_slack), abs=0.01)  # ... three in a row are
    assert rate["cusum_threshold"] == cusum_threshold(8, 3, RULE.cusum_false_alerts, RULE.cusum_slack)
    assert rate["rules_fired"] == ["sustained_drift"] and rate["cusum_checkins"] == 3 and rate["direction"] == "lower"
    assert baseline.factors[0].factor == "speech_production_below_baseline"
    assert (f"sustained drift, CUSUM {rate['cusum']:.1f} over 3 check-ins (threshold {rate['cusum_threshold']:.2f})"
            in baseline.factors[0].evidence)
    recovered = compare(findings_of(audio(speech_rate=212.0), vision()), earlier, SETTINGS)
    assert block(recovered, "vocal_markers", "speech_rate")["notable"] is False and recovered.factors == []


def test_a_change_for_the_better_is_reported_but_not_scored():
    baseline = compare(findings_of(audio(speech_rate=300.0), vision()), steady(8), SETTINGS)
    assert block(baseline, "vocal_markers", "speech_rate")["direction"] == "higher"
    assert baseline.factors == [] and baseline.report["changes"][0].startswith("speech rate 300 syllables per min, above")


def test_context_markers_are_reported_never_scored():
    baseline = compare(findings_of(audio(pitch_mean=160.0, intensity=80.0), vision()), steady(8), SETTINGS)
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
    earlier = history(*((audio(), vision()) for _ in range(8)))
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
    earlier = history(*((audio(), vision()) for _ in range(8)))
    a = audio(speech_rate=150.0, pause_rate=20.0, pitch_variability=1.0)
    v = vision(facial_expressivity=0.03)
    baseline = compare(findings_of(a, v), earlier, SETTINGS)
    fusion = fuse(as_audio(a), as_vision(v), ["audio", "vision"], {}, SETTINGS, baseline=(baseline.report, baseline.factors))
    # speech rate and pauses are one kind of change (speech production): one factor, both in its evidence
    assert fusion["risk_factors"] == ["speech_production_below_baseline", "pitch_variability_below_baseline",
                                      "expressivity_below_baseline"]
    production = fusion["risk_evidence"][0]["evidence"]
    assert production.startswith("pause rate 20 per min, above") and "; speech rate 150 syllables per min" in production
    assert fusion["risk_level"] == "high"  # three moderate factors
    only_speech = compare(findings_of(audio(speech_rate=150.0, pause_rate=20.0), vision()), earlier, SETTINGS)
    assert [f.factor for f in only_speech.factors] == ["speech_production_below_baseline"]
    assert fusion["baseline"]["previous_risk_levels"] == ["low"] * 5  # the latest five
    summary = clinical_summary(fusion, v["compliance"], "2026-03-01T00:00:00Z")
    assert summary["change_from_baseline"].startswith("Compared with the patient's last 8 check-in(s): pause rate")
    assert ("Discuss the change from the patient's usual check-ins with them and review negative symptoms"
            in summary["recommendations"])


def test_window_limits_how_far_back_the_baseline_reaches():
    settings = FusionSettings(baseline_window=3)
    earlier = history(*((audio(speech_rate=210.0), vision()) for _ in range(3)),
                      *((audio(speech_rate=400.0), vision()) for _ in range(5)))
    baseline = compare(findings_of(audio(speech_rate=210.0), vision()), earlier, settings)
    assert baseline.report["checkins_compared"] == 3 and baseline.factors == []
    assert block(baseline, "vocal_markers", "speech_rate")["mean"] == 210.0


# --- the quality gate --------------------------------------------------------------------------------------------


def recorded(quality: dict | None = None, **values: float) -> dict:
    """Audio with its quality section: 48 kHz stereo AAC from one phone unless told otherwise."""
    document = audio(**values)
    document["audio_quality"] = {"snr_db": 35.0, "clipped_fraction": 0.0, "voiced_seconds": 12.0,
                                 "source": {"sample_rate_hz": 48000, "channels": 2, "codec": "aac",
                                            "device": "Google Pixel 7", "encoder": None}, **(quality or {})}
    return document


def recorded_history(n: int, **quality) -> list[dict]:
    items = history(*((recorded(**quality), vision()) for _ in range(n)))
    for i in items:
        i["results"]["audio_quality"] = recorded(**quality)["audio_quality"]
    return items


@pytest.mark.parametrize(("quality", "why"), [
    ({"voiced_seconds": 1.2}, "only 1.2 s of voiced speech (at least 2 s needed)"),
    ({"snr_db": 3.0}, "speech only 3 dB above the background (at least 5 dB needed)"),
    ({"clipped_fraction": 0.04}, "clipped (4.0 % of speech samples at full scale)"),
])
def test_a_recording_that_fails_the_quality_gate_raises_nothing_and_says_why(quality, why):
    earlier = recorded_history(8)
    baseline = compare(findings_of(recorded(quality, speech_rate=120.0), vision()), earlier, SETTINGS)
    rate = block(baseline, "vocal_markers", "speech_rate")
    assert rate["measurable"] is False and rate["notable"] is False and rate["reason"].startswith("not measurable: ")
    assert why in rate["reason"] and "rci" not in rate and rate["available"] is True and rate["mean"] == 210.0
    assert baseline.factors == [] and baseline.report["notable_changes"] == [] and why in baseline.report["not_measurable"]
    face = block(baseline, "video_markers", "facial_expressivity")  # the video is not gated by the sound
    assert face["measurable"] is True
    good = compare(findings_of(recorded(speech_rate=120.0), vision()), earlier, SETTINGS)
    assert [f.factor for f in good.factors] == ["speech_production_below_baseline"]  # the same change, measurable
    # the check-in that was not measurable is no baseline for the next one either
    stored = history((recorded(quality, speech_rate=120.0), vision()))[0]
    stored["results"]["audio_quality"] = recorded(quality)["audio_quality"]
    later = compare(findings_of(recorded(), vision()), [stored] + earlier, SETTINGS)
    assert block(later, "vocal_markers", "speech_rate")["checkins"] == 8 and later.factors == []


def test_a_changed_device_or_sample_rate_is_not_compared_and_starts_a_new_baseline():
    earlier = recorded_history(8)
    laptop = {"source": {"sample_rate_hz": 16000, "channels": 1, "codec": "opus", "device": None, "encoder": None}}
    baseline = compare(findings_of(recorded(laptop, speech_rate=120.0), vision()), earlier, SETTINGS)
    rate = block(baseline, "vocal_markers", "speech_rate")
    assert rate["measurable"] is False and baseline.factors == []
    assert ("recorded differently (16000 Hz, 1 channel(s), opus) from the baseline's check-ins (48000 Hz, "
            "2 channel(s), aac, Google Pixel 7); a new baseline starts with this recording") in rate["reason"]
    # the next check-ins on the laptop are compared only with the laptop's
    on_laptop = recorded_history(2, quality=laptop) + earlier
    later = block(compare(findings_of(recorded(laptop), vision()), on_laptop, SETTINGS), "vocal_markers", "speech_rate")
    assert later["available"] is False and later["reason"] == (
        "measured the same way in 2 earlier check-in(s); a baseline needs 3")
    # a recording of unknown source (an older audio stage) is compared as before
    unknown = compare(findings_of(audio(speech_rate=120.0), vision()), earlier, SETTINGS)
    assert [f.factor for f in unknown.factors] == ["speech_production_below_baseline"]


# --- per-question baselines ---------------------------------------------------------------------------------------

ANSWER_UNITS = {"response_latency": "s", "speaking_time": "s", "speaking_fraction": "%", "pause_count": "count",
                "pause_rate": "per min", "speech_rate": "words per min", "word_count": "count",
                "mean_length_of_utterance": "words", "mattr": "ratio"}


def answer(step_id: str, latency: float, start: float, **values: float) -> dict:
    usual = {"response_latency": latency, "speaking_time": 8.0, "speaking_fraction": 80.0, "pause_count": 2,
             "pause_rate": 12.0, "speech_rate": 150.0, "word_count": 20, "mean_length_of_utterance": 6.5, "mattr": 0.8}
    return {"step_id": step_id, "start_s": start, "end_s": start + 10.0, "clipped": False,
            "markers": markers(ANSWER_UNITS, {**usual, **values}), "transcript": "I have been fine."}


def answers(*items: dict) -> dict:
    return {"assessed": True, "reason": None, "method": "check-in timeline windows", "flags": [], "items": list(items)}


def with_answers(document: dict, doc: dict) -> dict:
    return {**document, "answers": doc}


def test_each_answer_is_compared_with_the_patients_earlier_answers_to_the_same_prompt():
    latencies = [1.0, 1.2, 0.9, 1.1, 1.0, 1.3, 0.8, 1.1]
    earlier = history(*((with_answers(audio(), answers(answer("mood", lat, 5.0), answer("sleep", 3.0, 20.0))), vision())
                        for lat in latencies))
    for i, lat in zip(earlier, latencies):
        i["results"]["answers"] = answers(answer("mood", lat, 5.0), answer("sleep", 3.0, 20.0))
    now = with_answers(audio(), answers(answer("mood", 6.0, 5.0), answer("sleep", 3.1, 20.0),
                                        answer("side_effects", 2.0, 35.0)))
    baseline = compare(findings_of(now, vision()), earlier, SETTINGS)
    items = {a["step_id"]: a for a in baseline.answers["items"]}
    assert baseline.answers["method"] == "check-in timeline windows" and len(items) == 3
    mood = items["mood"]["markers"]["response_latency"]["baseline"]
    assert mood["checkins"] == 8 and mood["centre"] == pytest.approx(statistics.median(latencies))
    assert mood["rules_fired"][0] == "reliable_change" and mood["direction"] == "higher"
    assert mood["spread_floor_source"].startswith("least change that matters (0.25; no measured error)")
    sleep = items["sleep"]["markers"]["response_latency"]["baseline"]  # the sleep answer's own usual 3 s
    assert sleep["centre"] == 3.0 and sleep["notable"] is False
    assert items["sleep"]["transcript"] == "I have been fine." and items["sleep"]["start_s"] == 20.0
    new_prompt = items["side_effects"]["markers"]["response_latency"]["baseline"]
    assert new_prompt["available"] is False and new_prompt["reason"].startswith("measured the same way in 0")
    assert {"marker": "response_latency", "section": "answers", "step_id": "mood", "z_score": mood["z_score"],
            "direction": "higher", "rules_fired": mood["rules_fired"], "risk_factor": None} in \
        baseline.report["notable_changes"]
    assert baseline.factors == []  # per-answer changes are reported, not scored
    for name, marker in items["mood"]["markers"].items():
        assert parse(marker).baseline is not None, name


def test_without_answers_nothing_is_added_and_a_gated_recording_gates_its_answers_too():
    assert compare(findings_of(audio(), vision()), steady(5), SETTINGS).answers is None
    earlier = recorded_history(8)
    for i in earlier:
        i["results"]["answers"] = answers(answer("mood", 1.0, 5.0))
    now = with_answers(recorded({"voiced_seconds": 1.0}), answers(answer("mood", 9.0, 5.0)))
    gated = compare(findings_of(now, vision()), earlier, SETTINGS)
    latency = gated.answers["items"][0]["markers"]["response_latency"]["baseline"]
    assert latency["measurable"] is False and latency["notable"] is False and gated.report["notable_changes"] == []


def test_an_earlier_result_that_does_not_parse_is_left_out_of_the_baseline_and_the_rest_still_count():
    """One broken item in the history must not stop every later check-in of the patient: it is left out
    (and logged with its job and field), this job's own item is left out, and the window still applies."""
    items = [{"user_id": "clinic-a.patient-001", "timestamp": f"2026-01-0{n}T10:00:00.000000Z", "job_id": f"job-{n}"}
             for n in range(1, 6)]
    items[1]["results"] = {"compliance": {"verification_status": 5}}  # not a status
    items[2]["job_id"] = "job-now"  # this job's own item, from an earlier try of results
    kept = earlier_results(items, "job-now", window=2)
    assert [i.job_id for i in kept] == ["job-1", "job-4"]
