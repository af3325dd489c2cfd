"""The seed-shaped `results` map fusion writes for results to save (findings.py): the seed's sections,
the markers with the baseline fusion gave them, and what was not assessed named, never filled in."""

from __future__ import annotations

from services.fusion.findings import build_results as typed_build_results
from services.fusion.tests.checkins import as_audio, as_vision
from shared.domain.markers import Baseline, measured, parse

RATE = measured(180.0, "syllables per min", "syllable nuclei")
EXPRESSIVITY = measured(0.08, "blendshape activity (0-1)", "blendshapes")
WITH_BASELINE = {"available": True, "checkins": 4, "mean": 200.0, "sd": 8.0, "z_score": -2.5,
                 "relative_change": -0.1, "notable": False}
FUSION = {"multimodal_fusion": {"emotional_consistency": "single_modality", "overall_emotion": "calm",
                                "overall_emotion_basis": ["face"], "confidence": 0.85,
                                "risk_level": "low", "risk_factors": []},
          "clinical_summary": {"emotional_state": "x", "medication_adherence": "y", "risk_assessment": "z",
                               "recommendations": [], "flags": [], "generated_by": "rule_based",
                               "timestamp": "2024-01-15T12:05:30Z"},
          "vocal_markers": {"speech_rate": {**RATE, "baseline": WITH_BASELINE}},
          "video_markers": {"facial_expressivity": {**EXPRESSIVITY, "baseline": {
              "available": False, "checkins": 0, "notable": False, "reason": "first check-in"}}}}
AUDIO = {"audio_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                           "method": None, "reason": "no validated speech-emotion model is configured"},
         "vocal_markers": {"speech_rate": RATE}}
VISION = {"facial_emotion": {"primary_emotion": "neutral", "confidence": 0.82, "all_emotions": [],
                             "face_detected": True, "frame_count": 150},
          "video_markers": {"facial_expressivity": EXPRESSIVITY},
          "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True,
                         "compliance_score": None, "confidence": 0.5, "verification_status": "not_assessed",
                         "assessed": False, "reason": "no pill detector is configured"}}


def build_results(fusion: dict, audio: dict | None, vision: dict | None, skipped: dict[str, str]) -> dict:
    """`build_results` on the stage documents as fusion reads them from their artifacts."""
    return typed_build_results(fusion, as_audio(audio), as_vision(vision), skipped)


def test_results_hold_the_seed_sections_and_the_markers():
    results = build_results(FUSION, AUDIO, VISION, {})
    assert {"audio_emotion", "facial_emotion", "compliance", "multimodal_fusion", "clinical_summary",
            "vocal_markers", "video_markers"} == set(results)
    assert results["audio_emotion"] == AUDIO["audio_emotion"]
    assert {k: v for k, v in results["compliance"].items() if k != "self_report"} == VISION["compliance"]
    assert results["multimodal_fusion"] == FUSION["multimodal_fusion"]


def test_markers_are_stored_with_the_baseline_fusion_gave_them():
    results = build_results(FUSION, AUDIO, VISION, {})
    rate = parse(results["vocal_markers"]["speech_rate"])
    assert rate.value == 180.0 and rate.unit == "syllables per min"
    assert rate.baseline == Baseline(**WITH_BASELINE)
    assert parse(results["video_markers"]["facial_expressivity"]).baseline.reason == "first check-in"


def test_skipped_video_is_named_and_its_adherence_not_assessed():
    results = build_results({**FUSION, "video_markers": {}}, AUDIO, None, {"vision": "the recording has no video track"})
    face = results["facial_emotion"]
    assert face["assessed"] is False and face["primary_emotion"] is None
    assert face["reason"] == "the recording has no video track"
    compliance = results["compliance"]
    assert compliance["verification_status"] == "not_assessed" and compliance["assessed"] is False
    assert compliance["reason"] == "the recording has no video track" and compliance["pill_detected"] is None
    assert "video_markers" not in results


def test_skipped_sound_leaves_the_seed_audio_emotion_not_assessed():
    results = build_results({**FUSION, "vocal_markers": {}}, None, VISION, {"audio": "the file has no sound track"})
    assert results["audio_emotion"] == {"primary_emotion": None, "confidence": None, "all_emotions": [],
                                        "assessed": False, "method": None, "reason": "the file has no sound track"}
    assert "vocal_markers" not in results


SAID_TAKEN = {"classification": "taken", "words": ["didn't", "miss"], "answer": "I didn't miss any doses.",
              "partial_dose": False, "method": "rules_v1 (services/audio/self_report.py)",
              "window_source": "timeline", "assessed": True, "observed": False,
              "reason": "self-reported by the patient, not observed"}


def test_the_self_report_rides_in_compliance_beside_an_unchanged_verification_status():
    results = build_results(FUSION, {**AUDIO, "self_report": SAID_TAKEN}, VISION, {})
    compliance = results["compliance"]
    assert compliance["self_report"] == SAID_TAKEN
    # what the patient said never becomes observed intake
    assert compliance["verification_status"] == "not_assessed" and compliance["assessed"] is False
    assert "self_report" not in VISION["compliance"]  # the vision document is not changed in place


def test_without_audio_the_self_report_is_not_assessed_and_says_why():
    results = build_results(FUSION, None, VISION, {"audio": "the recording has no sound track"})
    report = results["compliance"]["self_report"]
    assert report["assessed"] is False and report["classification"] is None
    assert report["reason"] == "the recording has no sound track"


ANSWERS = {"assessed": True, "reason": None, "method": "split at the timeline", "flags": [],
           "items": [{"step_id": "mood", "start_s": 0.0, "end_s": 9.4, "clipped": False,
                      "markers": {"response_latency": measured(1.2, "s", "prompt to onset")},
                      "transcript": {"text": "calm", "language": "en"}}]}


def test_the_answers_ride_into_the_results_with_fusions_baselines_where_it_gave_them():
    assert build_results(FUSION, {**AUDIO, "answers": ANSWERS}, VISION, {})["answers"] == ANSWERS
    with_baseline = {**ANSWERS, "items": [{**ANSWERS["items"][0], "markers": {"response_latency": {
        **ANSWERS["items"][0]["markers"]["response_latency"], "baseline": WITH_BASELINE}}}]}
    results = build_results({**FUSION, "answers": with_baseline}, {**AUDIO, "answers": ANSWERS}, VISION, {})
    assert parse(results["answers"]["items"][0]["markers"]["response_latency"]).baseline == Baseline(**WITH_BASELINE)
    assert "answers" not in build_results(FUSION, AUDIO, VISION, {})  # an artifact from before per-answer markers
