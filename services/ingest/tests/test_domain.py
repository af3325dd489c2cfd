"""Check-in request validation and the identifiers ingest derives."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.domain.checkin import CheckinRequest, job_id_for_event, job_id_from_upload_key, upload_key
from shared.domain.errors import MalformedMessage
from shared.runtime.events import CHECKIN_SUBMITTED, CheckinSubmitted, decode_event, encode_event, event_data


def test_upload_key_round_trips_the_job_id():
    key = upload_key("patient-001", "job-abc123def456", "checkin.mp4", "2024-01-15T12:00:00.000000Z")
    assert key == "uploads/patient-001/job-abc123def456/20240115T120000Z_checkin.mp4"
    assert job_id_from_upload_key(key) == "job-abc123def456"
    assert job_id_from_upload_key("uploads/patient-001/not-a-job/x.mp4") is None
    assert job_id_from_upload_key("incoming/x.mp4") is None


def test_event_job_ids_are_deterministic_per_source_and_id():
    assert job_id_for_event("urn:ehr:a", "1") == job_id_for_event("urn:ehr:a", "1")
    assert job_id_for_event("urn:ehr:a", "1") != job_id_for_event("urn:ehr:b", "1")


@pytest.mark.parametrize("filename", ["../x.mp4", "a/b.mp4", "a\\b.mp4", "..", " . ", "x\n.mp4"])
def test_unsafe_filenames_are_refused(filename):
    with pytest.raises(ValidationError):
        CheckinRequest(patient_id="patient-001", filename=filename, content_type="video/mp4")


def test_content_type_parameters_are_accepted_and_normalised():
    request = CheckinRequest(patient_id="patient-001", filename="a.webm", content_type="Video/WebM; codecs=vp8")
    assert request.content_type == "video/webm"


def test_cloudevent_round_trip_and_wrong_type():
    data = CheckinSubmitted(clinic_id="clinic-a", patient_id="patient-001", s3_key="incoming/clinic-a/a.mp4")
    body = encode_event(CHECKIN_SUBMITTED, "urn:test", "job-x", data)
    event = decode_event(body)
    assert event.get_specversion() == "1.0" and event.get_subject() == "job-x" and event.get_id()
    assert event_data(event, CheckinSubmitted, CHECKIN_SUBMITTED) == data
    with pytest.raises(MalformedMessage, match="unexpected event type"):
        event_data(event, CheckinSubmitted, "org.other")
    with pytest.raises(MalformedMessage, match="CloudEvents"):
        decode_event('{"id": "1"}')
