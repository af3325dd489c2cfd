"""The SchizodotUsers item has the seed's exact shape, with the markers and their baselines added."""

from __future__ import annotations

from services.results.records import build_user_item, job_summary
from shared.markers import Baseline, measured, parse

JOB = {"job_id": "job-abc123def456", "patient_id": "patient-001", "s3_key": "uploads/patient-001/x.mp4",
       "created_at": "2024-01-15T12:00:00Z", "started_at": "2024-01-15T12:01:00Z"}
RATE = measured(180.0, "syllables per min", "syllable nuclei")
EXPRESSIVITY = measured(0.08, "blendshape activity (0-1)", "blendshapes")
WITH_BASELINE = {"available": True, "checkins": 4, "mean": 200.0, "sd": 8.0, "z_score": -2.5,
                 "relative_change": -0.1, "notable": False}
FUSION = {"analysed_at": "2024-01-15T12:05:30Z",
          "multimodal_fusion": {"emotional_consistency": "single_modality", "overall_emotion": "calm",
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


def test_item_matches_the_seed_example_shape():
    item = build_user_item(JOB, FUSION, AUDIO, VISION, {})
    assert set(item) == {"user_id", "timestamp", "job_id", "s3_key", "analysis_type", "analyzed_at",
                         "processing_time_seconds", "status", "results"}
    assert item["user_id"] == "patient-001" and item["timestamp"] == item["analyzed_at"] == "2024-01-15T12:05:30Z"
    assert item["processing_time_seconds"] == 270.0  # from started_at, as the seed's 45.2 s is
    assert item["analysis_type"] == "multimodal" and item["status"] == "completed"
    assert {"audio_emotion", "facial_emotion", "compliance", "multimodal_fusion", "clinical_summary",
            "vocal_markers", "video_markers"} == set(item["results"])
    assert item["results"]["audio_emotion"]["assessed"] is False
    assert job_summary(item) == {"emotion_summary": "calm", "compliance_score": None, "risk_level": "low",
                                 "verification_status": "not_assessed"}


def test_markers_are_stored_with_the_baseline_fusion_gave_them():
    results = build_user_item(JOB, FUSION, AUDIO, VISION, {})["results"]
    rate = parse(results["vocal_markers"]["speech_rate"])
    assert rate.value == 180.0 and rate.unit == "syllables per min"
    assert rate.baseline == Baseline(**WITH_BASELINE)
    assert parse(results["video_markers"]["facial_expressivity"]).baseline.reason == "first check-in"


def test_skipped_video_is_named_and_its_adherence_not_assessed():
    item = build_user_item(JOB, {**FUSION, "video_markers": {}}, AUDIO, None, {"vision": "the recording has no video track"})
    assert item["analysis_type"] == "audio_only"
    face = item["results"]["facial_emotion"]
    assert face["assessed"] is False and face["primary_emotion"] is None
    assert face["reason"] == "the recording has no video track"
    compliance = item["results"]["compliance"]
    assert compliance["verification_status"] == "not_assessed" and compliance["assessed"] is False
    assert compliance["reason"] == "the recording has no video track" and compliance["pill_detected"] is None
    assert "video_markers" not in item["results"]


def test_skipped_sound_leaves_the_seed_audio_emotion_not_assessed():
    item = build_user_item(JOB, {**FUSION, "vocal_markers": {}}, None, VISION, {"audio": "the file has no sound track"})
    voice = item["results"]["audio_emotion"]
    assert voice == {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                     "method": None, "reason": "the file has no sound track"}
    assert "vocal_markers" not in item["results"] and item["analysis_type"] == "vision_only"
