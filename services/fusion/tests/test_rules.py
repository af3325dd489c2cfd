"""Fusion rules on hand-built stage outputs."""

from __future__ import annotations

from services.fusion.rules import clinical_summary, fuse
from services.fusion.settings import FusionSettings

SETTINGS = FusionSettings()


def _voice(label: str, confidence: float = 0.8, pause_ratio: float = 0.2, speech: bool = True) -> dict:
    return {
        "audio_emotion": {"primary_emotion": label, "confidence": confidence, "assessed": True,
                          "all_emotions": [{"emotion": label, "confidence": confidence},
                                           {"emotion": "neutral", "confidence": round(1 - confidence, 3)}]},
        "vocal_markers": {"pause_ratio": {"value": pause_ratio, "unit": "fraction"}},
        "speech_detected": speech,
    }


def _face(label: str, confidence: float = 0.9, status: str = "inconclusive", flat: bool = False) -> dict:
    return {
        "facial_emotion": {"primary_emotion": label, "confidence": confidence, "face_detected": True,
                           "all_emotions": [{"emotion": label, "confidence": confidence},
                                            {"emotion": "neutral", "confidence": round(1 - confidence, 3)}],
                           "expressivity": {"flat_affect": flat}},
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
    fusion = fuse(_voice("sad", pause_ratio=0.7), _face("sad", flat=True), ["audio", "vision"], {}, SETTINGS)
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
