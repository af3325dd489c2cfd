"""Fusion rules on hand-built stage outputs."""

from __future__ import annotations

import pytest

from services.fusion.rules import clinical_summary, fuse
from services.fusion.settings import FusionSettings

SETTINGS = FusionSettings()
BOTH = ["audio", "vision"]


def _voice(label: str, confidence: float = 0.8, pause_ratio: float = 0.2, speech: bool = True,
           speech_seconds: float | None = None, duration: float = 10.0, f0_variability: float | None = None) -> dict:
    return {
        "audio_emotion": {"primary_emotion": label, "confidence": confidence, "assessed": True,
                          "all_emotions": [{"emotion": label, "confidence": confidence},
                                           {"emotion": "neutral", "confidence": round(1 - confidence, 3)}]},
        "vocal_markers": {"pause_ratio": {"value": pause_ratio, "unit": "fraction"},
                          "speech_seconds": {"value": speech_seconds, "unit": "s"},
                          "f0_variability": {"value": f0_variability, "unit": "semitones"}},
        "speech_detected": speech,
        "duration_seconds": duration,
    }


def _face(label: str, confidence: float = 0.9, status: str = "inconclusive", activity: float | None = 0.08) -> dict:
    return {
        "facial_emotion": {"primary_emotion": label, "confidence": confidence, "face_detected": True,
                           "all_emotions": [{"emotion": label, "confidence": confidence},
                                            {"emotion": "neutral", "confidence": round(1 - confidence, 3)}],
                           "expressivity": {"blendshape_activity": activity,
                                            "flat_affect": None if activity is None else activity < 0.03}},
        "compliance": {"verification_status": status, "reason": "pill detection is not configured"},
    }


def test_agreeing_face_and_voice_are_consistent_and_low_risk_when_compliant():
    fusion = fuse(_voice("happy"), _face("happy", status="compliant"), ["audio", "vision"], {}, SETTINGS)
    assert fusion["emotional_consistency"] == "consistent"
    assert fusion["overall_emotion"] == "happy"
    assert fusion["risk_level"] == "low" and fusion["risk_factors"] == []
    summary = clinical_summary(fusion, {"verification_status": "compliant"}, "2026-01-01T00:00:00Z")
    assert summary["recommendations"] == ["Continue current treatment plan", "Schedule routine follow-up"]
    assert summary["generated_by"] == "rule_based"


def test_face_labels_are_mapped_into_one_vocabulary():
    fusion = fuse(_voice("anxious"), _face("fear", status="compliant"), ["audio", "vision"], {}, SETTINGS)
    assert fusion["face_emotion"] == "anxious" and fusion["emotional_consistency"] == "consistent"
    assert fusion["overall_emotion"] == "anxious"
    assert "negative_affect" in fusion["risk_factors"]


def test_inconsistent_face_and_voice_is_a_low_severity_factor():
    fusion = fuse(_voice("sad"), _face("happy", status="compliant"), ["audio", "vision"], {}, SETTINGS)
    assert fusion["emotional_consistency"] == "inconsistent"
    assert fusion["risk_factors"] == ["face_voice_inconsistent"] and fusion["risk_level"] == "low"


def test_non_compliance_is_high_risk():
    fusion = fuse(_voice("neutral"), _face("neutral", status="non_compliant"), ["audio", "vision"], {}, SETTINGS)
    assert fusion["risk_level"] == "high" and "medication_not_taken" in fusion["risk_factors"]


def test_three_moderate_factors_make_high_risk():
    fusion = fuse(_voice("sad", pause_ratio=0.7), _face("sad", activity=0.01), ["audio", "vision"], {}, SETTINGS)
    assert {"medication_intake_unverified", "negative_affect", "flat_affect", "reduced_speech"} <= set(fusion["risk_factors"])
    assert fusion["risk_level"] == "high"


def test_pause_ratio_boundary():
    at = fuse(_voice("neutral", pause_ratio=SETTINGS.reduced_speech_pause_ratio), _face("neutral", status="compliant"),
              ["audio", "vision"], {}, SETTINGS)
    below = fuse(_voice("neutral", pause_ratio=SETTINGS.reduced_speech_pause_ratio - 0.01),
                 _face("neutral", status="compliant"), ["audio", "vision"], {}, SETTINGS)
    assert "reduced_speech" in at["risk_factors"] and "reduced_speech" not in below["risk_factors"]


def test_missing_modality_lowers_confidence_and_is_named():
    both = fuse(_voice("happy"), _face("happy", status="compliant"), ["audio", "vision"], {}, SETTINGS)
    voice_only = fuse(_voice("happy"), None, ["audio"], {"vision": "the recording has no video track"}, SETTINGS)
    assert voice_only["confidence"] < both["confidence"]
    assert voice_only["modalities_not_assessed"] == {"vision": "the recording has no video track"}
    assert voice_only["emotional_consistency"] == "single_modality"
    summary = clinical_summary(voice_only, None, "2026-01-01T00:00:00Z")
    assert "not assessed: vision (the recording has no video track)" in summary["emotional_state"]
    assert "Not verified" in summary["medication_adherence"]


def test_no_speech_is_a_finding_not_a_guess():
    silent = {"audio_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                                "reason": "no speech detected in 6.0 s of audio"},
              "vocal_markers": {}, "speech_detected": False}
    fusion = fuse(silent, _face("neutral", status="compliant"), ["audio", "vision"], {}, SETTINGS)
    assert fusion["voice_emotion"] is None and "no_speech" in fusion["risk_factors"]
    assert fusion["modalities_not_assessed"] == {"audio": "no speech detected in 6.0 s of audio"}


def test_negative_affect_confidence_boundary():
    # Voice only and no penalty: the overall confidence is sad's share of the voice distribution.
    settings = FusionSettings(missing_modality_penalty=1.0)

    def voice(share: float) -> dict:
        rest = round((1 - share) / 2, 4)
        audio = _voice("sad", confidence=share)
        audio["audio_emotion"]["all_emotions"] = [{"emotion": "sad", "confidence": share},
                                                  {"emotion": "neutral", "confidence": rest},
                                                  {"emotion": "happy", "confidence": rest}]
        return audio

    at = fuse(voice(settings.negative_affect_confidence), None, ["audio"], {}, settings)
    below = fuse(voice(settings.negative_affect_confidence - 0.01), None, ["audio"], {}, settings)
    assert at["overall_emotion"] == "sad" and below["overall_emotion"] == "sad"
    assert "negative_affect" in at["risk_factors"] and "negative_affect" not in below["risk_factors"]


def test_flat_affect_boundary_uses_the_fusion_threshold():
    limit = SETTINGS.flat_affect_max_activity
    below = fuse(_voice("neutral"), _face("neutral", status="compliant", activity=limit - 0.001), BOTH, {}, SETTINGS)
    at = fuse(_voice("neutral"), _face("neutral", status="compliant", activity=limit), BOTH, {}, SETTINGS)
    unjudged = fuse(_voice("neutral"), _face("neutral", status="compliant", activity=None), BOTH, {}, SETTINGS)
    assert "flat_affect" in below["risk_factors"] and below["risk_level"] == "moderate"
    assert "flat_affect" not in at["risk_factors"] and at["risk_level"] == "low"
    assert "flat_affect" not in unjudged["risk_factors"]  # face seen too briefly: not judged, not guessed


def test_speech_share_boundary():
    share = SETTINGS.min_speech_share
    face = _face("neutral", status="compliant")
    little = fuse(_voice("neutral", speech_seconds=10 * share - 0.1, duration=10), face, BOTH, {}, SETTINGS)
    enough = fuse(_voice("neutral", speech_seconds=10 * share, duration=10), face, BOTH, {}, SETTINGS)
    assert "reduced_speech" in little["risk_factors"]
    assert "speech fills" in little["risk_evidence"][0]["evidence"]
    assert "reduced_speech" not in enough["risk_factors"]


def test_monotone_voice_boundary_is_low_severity():
    limit = SETTINGS.monotone_max_f0_variability
    face = _face("neutral", status="compliant")
    flat = fuse(_voice("neutral", f0_variability=limit - 0.01), face, BOTH, {}, SETTINGS)
    varied = fuse(_voice("neutral", f0_variability=limit), face, BOTH, {}, SETTINGS)
    assert flat["risk_factors"] == ["monotone_voice"] and flat["risk_level"] == "low"
    assert varied["risk_factors"] == []
    summary = clinical_summary(flat, {"verification_status": "compliant"}, "2026-01-01T00:00:00Z")
    assert "Review mood and negative symptoms at the next contact" in summary["recommendations"]


def test_two_moderate_factors_stay_moderate():
    fusion = fuse(_voice("neutral", pause_ratio=0.7), _face("neutral", activity=0.01, status="compliant"),
                  BOTH, {}, SETTINGS)
    assert sorted(fusion["risk_factors"]) == ["flat_affect", "reduced_speech"]
    assert fusion["risk_level"] == "moderate"


def test_face_not_visible_is_moderate_and_named():
    no_face = {"facial_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [],
                                  "face_detected": False, "reason": "no face was visible in any of the 30 frames"},
               "compliance": {"verification_status": "inconclusive", "reason": "no face was visible"}}
    fusion = fuse(_voice("happy"), no_face, BOTH, {}, SETTINGS)
    assert "face_not_visible" in fusion["risk_factors"]
    assert fusion["modalities_not_assessed"] == {"vision": "no face was visible in any of the 30 frames"}
    assert fusion["emotional_consistency"] == "single_modality"


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_each_missing_modality_multiplies_confidence_by_the_penalty(missing):
    settings = FusionSettings(missing_modality_penalty=0.5)
    voice, face = _voice("happy", confidence=1.0), _face("happy", confidence=1.0, status="compliant")
    if missing == 0:
        fusion = fuse(voice, face, BOTH, {}, settings)
    elif missing == 1:
        fusion = fuse(voice, None, ["audio"], {"vision": "no video track"}, settings)
    else:
        fusion = fuse(None, None, [], {"audio": "no sound", "vision": "no video"}, settings)
    assert fusion["confidence"] == (1.0 if missing == 0 else 0.5 if missing == 1 else 0.0)
    assert len(fusion["modalities_not_assessed"]) == missing


def test_without_history_the_summary_says_baseline_was_not_assessed():
    fusion = fuse(_voice("happy"), _face("happy", status="compliant"), BOTH, {}, SETTINGS)
    assert fusion["baseline"] is None
    summary = clinical_summary(fusion, {"verification_status": "compliant"}, "2026-01-01T00:00:00Z")
    assert summary["change_from_baseline"] == "Change from baseline was not assessed"
