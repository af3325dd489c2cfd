"""The typed job record reads and writes the stored item in the seed's shape
(shared/docs/DYNAMODB_SCHEMA.md), with the stages' state under metadata.pipeline."""

from __future__ import annotations

from shared.domain.job import ClaimOutcome, Job, JobStatus, claim_outcome, credit_target, new_job, plan_weights

SEED_EXAMPLE = {
    "job_id": "job-abc123def456", "patient_id": "patient-001", "status": "completed",
    "s3_key": "uploads/patient-001/20240115T120000Z_checkin.mp4", "filename": "checkin-2024-01-15.mp4",
    "content_type": "video/mp4", "created_at": "2024-01-15T12:00:00Z", "updated_at": "2024-01-15T12:05:30Z",
    "started_at": "2024-01-15T12:01:00Z", "completed_at": "2024-01-15T12:05:30Z", "progress": 100,
    "message": "Analysis completed successfully", "error": None,
    "results": {"emotion_summary": "calm", "compliance_score": 0.95, "risk_level": "low"},
    "metadata": {"session_type": "weekly_checkin"},
}
STAGES_ITEM = {
    **SEED_EXAMPLE, "status": "processing",
    "metadata": {"session_type": "weekly_checkin", "pipeline": {
        "source": "api", "trace_id": "a" * 32, "expected": ["audio"], "skipped": {"vision": "no video track"},
        "weights": {"ingest": 10, "audio": 70, "fusion": 10}, "bucket": "schizodot-media",
        "media": {"duration_seconds": 4.0, "has_audio": True, "has_video": False},
        "stages": {"ingest": {"state": "done", "message_id": "m-1", "started_at": "t1", "finished_at": "t2",
                              "credited": 10, "attempts": 1, "outputs": {"size_bytes": 10, "compute_seconds": 0.2}},
                   "audio": {"state": "running", "message_id": "m-2", "started_at": "t3", "credited": 5,
                             "attempts": 2}},
        "written_by_a_newer_version": {"kept": True}}},
}


def test_the_seed_example_item_round_trips_exactly():
    job = Job.from_item(SEED_EXAMPLE)
    assert job.metadata == {"session_type": "weekly_checkin"} and job.pipeline.stages == {}
    assert job.to_item() == {**SEED_EXAMPLE, "metadata": {"session_type": "weekly_checkin", "pipeline": {}}}


def test_the_pipeline_state_is_typed_and_round_trips_exactly():
    job = Job.from_item(STAGES_ITEM)
    assert job.to_item() == STAGES_ITEM
    assert job.pipeline.expected == ["audio"] and job.pipeline.weight("audio") == 70
    assert job.pipeline.done("ingest") and not job.pipeline.done("audio")
    assert job.pipeline.stages["ingest"].outputs.size_bytes == 10
    assert job.pipeline.weight("ingest") == 10 and job.pipeline.weight("results") == 0


def test_a_new_job_is_the_schema_item_status_queued():
    job = new_job("job-abc123def456", patient_id="patient-001", s3_key="uploads/k", filename="c.mp4",
                  content_type="video/mp4", created_at="2026-01-01T00:00:00.000000Z", message="Waiting for the upload",
                  source="api", metadata={"session_type": "weekly_checkin"},
                  trace_fields={"trace_id": "b" * 32, "trace_context": {"traceparent": "00-x"}})
    assert job.to_item() == {
        "job_id": "job-abc123def456", "patient_id": "patient-001", "status": "queued", "s3_key": "uploads/k",
        "filename": "c.mp4", "content_type": "video/mp4", "created_at": "2026-01-01T00:00:00.000000Z",
        "updated_at": "2026-01-01T00:00:00.000000Z", "progress": 0, "message": "Waiting for the upload",
        "metadata": {"session_type": "weekly_checkin", "pipeline": {
            "source": "api", "stages": {}, "trace_id": "b" * 32, "trace_context": {"traceparent": "00-x"}}},
    }
    traced = new_job("job-abc123def457", patient_id="p-1", s3_key="k", filename="f", content_type="video/mp4",
                     created_at="t", message="m", source="event").with_trace({"trace_id": "c" * 32})
    assert traced.to_item()["metadata"]["pipeline"] == {"source": "event", "stages": {}, "trace_id": "c" * 32}


def test_the_api_view_hides_whose_job_it_is_where_asked():
    job = Job.from_item(STAGES_ITEM)
    shown = JobStatus.of(job, with_patient=True)
    assert shown.patient_id == "patient-001" and shown.s3_key == SEED_EXAMPLE["s3_key"]
    assert shown.modalities == ["audio"] and shown.skipped == {"vision": "no video track"} and shown.trace_id == "a" * 32
    hidden = JobStatus.of(job, with_patient=False)
    assert hidden.patient_id is None and hidden.s3_key is None and hidden.progress == 100


def test_claims_and_credits_follow_the_rules():
    job = Job.from_item(STAGES_ITEM)
    assert claim_outcome(None, "audio", "m") is ClaimOutcome.NO_SUCH_JOB
    assert claim_outcome(job, "ingest", "m-9") is ClaimOutcome.ALREADY_DONE
    assert claim_outcome(job, "audio", "m-9") is ClaimOutcome.TAKEN
    assert claim_outcome(job, "audio", "m-2") is ClaimOutcome.CLAIMED  # the same message resumes
    assert claim_outcome(job, "fusion", "m-3") is ClaimOutcome.CLAIMED
    assert claim_outcome(job.model_copy(update={"status": "failed"}), "fusion", "m") is ClaimOutcome.JOB_FINISHED
    assert credit_target(70, 0.5) == 35 and credit_target(70, 1.0) == 69 and credit_target(70, -1) == 0
    assert plan_weights(["audio", "vision"]) == {"ingest": 10, "fusion": 10, "audio": 25, "vision": 45}
    assert plan_weights(["vision"])["vision"] == 70
