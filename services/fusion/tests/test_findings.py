"""The seed-shaped `results` map fusion writes for results to save (findings.py)."""

from __future__ import annotations

from services.fusion.findings import build_results

FUSION = {"multimodal_fusion": {"emotional_consistency": "consistent", "overall_emotion": "calm", "confidence": 0.85,
                                "risk_level": "low", "risk_factors": []},
          "clinical_summary": {"emotional_state": "x", "medication_adherence": "y", "risk_assessment": "z",
                               "recommendations": [], "generated_by": "rule_based",
                               "timestamp": "2024-01-15T12:05:30Z"}}
AUDIO = {"audio_emotion": {"primary_emotion": "calm", "confidence": 0.87, "all_emotions": []},
         "vocal_markers": {"pause_ratio": {"value": 0.2, "unit": "fraction"}}}
VISION = {"facial_emotion": {"primary_emotion": "neutral", "confidence": 0.82, "all_emotions": [],
                             "face_detected": True, "frame_count": 150},
          "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True,
                         "compliance_score": None, "confidence": 0.5, "verification_status": "inconclusive"}}


def test_results_hold_the_seed_sections():
    results = build_results(FUSION, AUDIO, VISION, {})
    assert {"audio_emotion", "facial_emotion", "compliance", "multimodal_fusion", "clinical_summary"} <= set(results)
    assert results["audio_emotion"] == AUDIO["audio_emotion"] and results["compliance"] == VISION["compliance"]
    assert results["vocal_markers"] == AUDIO["vocal_markers"]
    assert results["multimodal_fusion"] == FUSION["multimodal_fusion"]


def test_skipped_modality_is_named_not_filled_in():
    results = build_results(FUSION, AUDIO, None, {"vision": "the recording has no video track"})
    face = results["facial_emotion"]
    assert face["assessed"] is False and face["primary_emotion"] is None
    assert face["reason"] == "the recording has no video track"
    assert results["compliance"]["verification_status"] == "inconclusive"
