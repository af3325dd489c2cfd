"""The SchizodotUsers item has the seed's exact shape, from fusion's findings document and the job."""

from __future__ import annotations

import pytest

from services.results.stage.user_item import build_user_item, job_summary
from shared.domain.findings import FusionDocument, ResultItem
from shared.domain.job import Job
from shared.domain.stored_results import stored_result

JOB = {"job_id": "job-abc123def456", "patient_id": "patient-001", "status": "processing",
       "s3_key": "uploads/patient-001/x.mp4", "created_at": "2024-01-15T12:00:00Z",
       "updated_at": "2024-01-15T12:01:00Z", "started_at": "2024-01-15T12:01:00Z"}
RESULTS = {"audio_emotion": {"primary_emotion": "calm", "confidence": 0.87, "all_emotions": []},
           "facial_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [], "face_detected": False,
                              "frame_count": 0, "assessed": False, "reason": "the recording has no video track"},
           "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True,
                          "compliance_score": None, "confidence": 0.5, "verification_status": "inconclusive"},
           "multimodal_fusion": {"emotional_consistency": "consistent", "overall_emotion": "calm",
                                 "confidence": 0.85, "risk_level": "low", "risk_factors": []},
           "clinical_summary": {"emotional_state": "x", "medication_adherence": "y", "risk_assessment": "z",
                                "recommendations": [], "generated_by": "rule_based",
                                "timestamp": "2024-01-15T12:05:30Z"}}
FINDINGS = FusionDocument.model_validate({"job_id": "job-abc123def456", "analysed_at": "2024-01-15T12:05:30Z",
                                         "results": RESULTS})


def _job(skipped: dict[str, str] | None = None) -> Job:
    return Job.from_item({**JOB, "metadata": {"pipeline": {"skipped": skipped or {}}}})


def test_item_matches_the_seed_example_shape():
    result = build_user_item(_job(), FINDINGS)
    item = result.stored()
    assert set(item) == {"user_id", "timestamp", "job_id", "s3_key", "analysis_type", "analyzed_at",
                         "processing_time_seconds", "status", "results"}
    assert item["user_id"] == "patient-001" and item["timestamp"] == item["analyzed_at"] == "2024-01-15T12:05:30Z"
    assert item["processing_time_seconds"] == 270.0  # from started_at, as the seed's 45.2 s is
    assert item["analysis_type"] == "multimodal" and item["status"] == "completed"
    assert item["results"] == RESULTS  # fusion's map, saved as it is
    assert job_summary(result) == {"emotion_summary": "calm", "compliance_score": None, "risk_level": "low",
                                 "verification_status": "inconclusive"}


def test_skipped_modality_makes_a_single_modality_item():
    item = build_user_item(_job({"vision": "the recording has no video track"}), FINDINGS)
    assert item.analysis_type == "audio_only"
    assert build_user_item(_job({"audio": "the recording has no sound track"}), FINDINGS).analysis_type == \
        "vision_only"


def test_the_clinic_is_stored_once_in_the_patient_key_and_read_from_it():
    """The item's clinic is its key's (clinic.patient): not written again beside it, read from it."""
    job = Job.from_item({**JOB, "patient_id": "clinic-a.patient-001",
                         "metadata": {"clinic_id": "clinic-a", "pipeline": {"skipped": {}}}})
    result = build_user_item(job, FINDINGS)
    item = result.stored()
    assert item["user_id"] == "clinic-a.patient-001" and "clinic_id" not in item
    assert result.clinic_id == "clinic-a" and stored_result(item).clinic_id == "clinic-a"
    assert "clinic_id" not in job.to_item()["metadata"]  # nor on the job: its patient_id is the same key
    assert job.clinic_id == "clinic-a" and job.shown_item()["metadata"]["clinic_id"] == "clinic-a"  # the APIs' view


def test_items_and_jobs_written_with_the_clinic_beside_the_key_still_read():
    old_item = {**build_user_item(Job.from_item({**JOB, "patient_id": "clinic-a.patient-001"}), FINDINGS).stored(),
                "clinic_id": "clinic-a"}
    parsed = ResultItem.model_validate(old_item)
    assert parsed.clinic_id == "clinic-a" and parsed.stored() == old_item  # kept as it came
    assert stored_result(old_item).clinic_id == "clinic-a"
    assert stored_result({**old_item, "user_id": "patient-001"}).clinic_id == "clinic-a"  # a key from before it named the clinic
    old_job = Job.from_item({**JOB, "patient_id": "patient-001", "metadata": {"clinic_id": "clinic-a"}})
    assert old_job.clinic_id == "clinic-a" and old_job.to_item()["metadata"]["clinic_id"] == "clinic-a"
    with pytest.raises(ValueError, match="not its patient key's clinic"):
        Job.from_item({**JOB, "patient_id": "clinic-b.patient-001", "metadata": {"clinic_id": "clinic-a"}})
