"""Per-check-in options (shared.domain.options): what a check-in may ask for, and how it is kept on the job."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.domain.checkin import CheckinRequest
from shared.domain.job import Job, new_job
from shared.domain.options import CheckinOptions


def test_no_options_are_the_deployments_defaults_and_are_not_stored():
    options = CheckinOptions()
    assert options.is_default and all(options.wants(a) for a in ("audio", "vision", "transcript"))
    job = new_job("job-000000000001", patient_id="c-1.p-1", s3_key="k", filename="f", content_type="video/mp4",
                  created_at="2026-11-30T10:00:00Z", message="m", source="api", options=options)
    assert "options" not in job.to_item()["metadata"]["pipeline"]
    assert Job.from_item(job.to_item()).pipeline.options == options


def test_chosen_options_are_kept_on_the_job_in_one_order():
    options = CheckinOptions(analyses=["transcript", "vision", "audio"], thresholds={"missed_medication_streak": 2})
    assert options.analyses == ("audio", "vision", "transcript")
    job = new_job("job-000000000001", patient_id="c-1.p-1", s3_key="k", filename="f", content_type="video/mp4",
                  created_at="2026-11-30T10:00:00Z", message="m", source="api", options=options)
    assert job.to_item()["metadata"]["pipeline"]["options"] == {
        "analyses": ["audio", "vision", "transcript"], "thresholds": {"missed_medication_streak": 2}}
    assert Job.from_item(job.to_item()).pipeline.options == options
    assert not CheckinOptions(analyses=["vision"]).wants("transcript")


@pytest.mark.parametrize("given, problem", [
    ({"analyses": []}, "choose audio, vision or both"),
    ({"analyses": ["transcript"]}, "choose audio, vision or both"),
    ({"analyses": ["vision", "transcript"]}, "the transcript is made from the audio"),
    ({"analyses": ["audio", "audio"]}, "each analysis may be named once"),
    ({"analyses": ["emotion"]}, "Input should be 'audio', 'vision' or 'transcript'"),
    ({"thresholds": {"baseline_window": 1}}, "greater than or equal to 2"),
    ({"thresholds": {"baseline_window": 3, "baseline_min_checkins": 5}}, "cannot exceed baseline_window"),
    ({"thresholds": {"risk": 2}}, "Extra inputs are not permitted"),
])
def test_options_that_make_no_sense_are_refused_with_the_reason(given, problem):
    with pytest.raises(ValidationError, match=problem):
        CheckinRequest(patient_id="patient-001", filename="c.mp4", content_type="video/mp4", options=given)
