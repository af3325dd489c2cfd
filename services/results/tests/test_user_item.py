"""The SchizodotUsers item has the seed's exact shape."""

from __future__ import annotations

from services.fusion.findings import build_results
from services.results.user_item import build_user_item, job_summary

JOB = {"job_id": "job-abc123def456", "patient_id": "patient-001", "s3_key": "uploads/patient-001/x.mp4",
       "created_at": "2024-01-15T12:00:00Z", "started_at": "2024-01-15T12:01:00Z"}
FUSION = {"analysed_at": "2024-01-15T12:05:30Z",
          "multimodal_fusion": {"emotional_consistency": "consistent", "overall_emotion": "calm", "confidence": 0.85,
                                "risk_level": "low", "risk_factors": []},
          "clinical_summary": {"emotional_state": "x", "medication_adherence": "y", "risk_assessment": "z",
                               "recommendations": [], "generated_by": "rule_based", "timestamp": "2024-01-15T12:05:30Z"}}
AUDIO = {"audio_emotion": {"primary_emotion": "calm", "confidence": 0.87, "all_emotions": []},
         "vocal_markers": {"pause_ratio": {"value": 0.2, "unit": "fraction"}}}
VISION = {"facial_emotion": {"primary_emotion": "neutral", "confidence": 0.82, "all_emotions": [],
                             "face_detected": True, "frame_count": 150},
          "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True,
                         "compliance_score": None, "confidence": 0.5, "verification_status": "inconclusive"}}


def test_item_matches_the_seed_example_shape():
    item = build_user_item(JOB, FUSION["analysed_at"], build_results(FUSION, AUDIO, VISION, {}), {})
    assert set(item) == {"user_id", "timestamp", "job_id", "s3_key", "analysis_type", "analyzed_at",
                         "processing_time_seconds", "status", "results"}
    assert item["user_id"] == "patient-001" and item["timestamp"] == item["analyzed_at"] == "2024-01-15T12:05:30Z"
    assert item["processing_time_seconds"] == 270.0  # from started_at, as the seed's 45.2 s is
    assert item["analysis_type"] == "multimodal" and item["status"] == "completed"
    assert {"audio_emotion", "facial_emotion", "compliance", "multimodal_fusion", "clinical_summary"} <= set(item["results"])
    assert job_summary(item) == {"emotion_summary": "calm", "compliance_score": None, "risk_level": "low",
                                 "verification_status": "inconclusive"}


def test_skipped_modality_is_named_not_filled_in():
    item = build_user_item(JOB, FUSION["analysed_at"], build_results(FUSION, AUDIO, None, {"vision": "the recording has no video track"}), {"vision": "the recording has no video track"})
    assert item["analysis_type"] == "audio_only"
    face = item["results"]["facial_emotion"]
    assert face["assessed"] is False and face["primary_emotion"] is None
    assert face["reason"] == "the recording has no video track"
    assert item["results"]["compliance"]["verification_status"] == "inconclusive"
