"""The FHIR resource set for the EHR, validated by fhir.resources."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from services.results.ehr import RESULTS_AVAILABLE, encode_results_event, event_id
from services.results.fhir import FHIR_VERSION, build_bundle, patient_reference
from services.fusion.findings import build_results
from services.results.user_item import build_user_item
from shared.job import Job

JOB = {"job_id": "job-abc123def456", "patient_id": "patient-001", "s3_key": "uploads/patient-001/job-abc123def456/x.mp4",
       "filename": "x.mp4", "content_type": "video/mp4",
       "created_at": "2024-01-15T12:00:00.000000Z", "started_at": "2024-01-15T12:01:00.000000Z"}
FUSION = {
    "analysed_at": "2024-01-15T12:05:30.123456Z",
    "multimodal_fusion": {
        "emotional_consistency": "consistent", "overall_emotion": "happy", "confidence": 0.81, "risk_level": "moderate",
        "risk_factors": ["medication_intake_unverified"],
        "risk_evidence": [{"factor": "medication_intake_unverified", "severity": "moderate",
                           "evidence": "pill detection is not configured"}],
        "modalities_assessed": ["audio", "vision"], "modalities_not_assessed": {},
        "face_emotion": "happy", "voice_emotion": "happy", "method": "rule_based_v2",
        "baseline": {"available": False, "reason": "first check-in", "changes": []},
    },
    "clinical_summary": {"emotional_state": "Patient appears in good spirits",
                         "medication_adherence": "Not verified - pill detection is not configured",
                         "risk_assessment": "Moderate risk - medication intake unverified",
                         "recommendations": ["Confirm medication adherence with the patient"],
                         "change_from_baseline": "First check-in: no baseline yet to compare with",
                         "generated_by": "rule_based", "timestamp": "2024-01-15T12:05:30.123456Z"},
}
AUDIO = {"audio_emotion": {"primary_emotion": "happy", "confidence": 0.7, "all_emotions": [], "assessed": True,
                           "method": "prosody_rules_v1"},
         "vocal_markers": {"pause_ratio": {"value": 0.2, "unit": "fraction"}}}
VISION = {"facial_emotion": {"primary_emotion": "happy", "confidence": 0.9, "all_emotions": [], "face_detected": True,
                             "frame_count": 30, "expressivity": {"blendshape_activity": 0.05}},
          "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True, "compliance_score": None,
                         "confidence": 0.5, "verification_status": "inconclusive",
                         "reason": "pill detection is not configured"}}


def _item(fusion: dict, audio: dict | None, vision: dict | None, skipped: dict[str, str] | None = None) -> dict:
    """The SchizodotUsers item results saves for JOB, from fusion's findings document."""
    job = Job.from_item({**JOB, "status": "processing", "updated_at": JOB["started_at"],
                         "metadata": {"pipeline": {"skipped": skipped or {}}}})
    findings = {"analysed_at": fusion["analysed_at"], "results": build_results(fusion, audio, vision, skipped or {})}
    return build_user_item(job, findings)


def _resources(bundle: dict) -> dict[str, dict]:
    found = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        name = resource["resourceType"]
        if name == "Observation":
            name = resource["code"]["coding"][0]["code"]
        found[name] = resource
    return found


def test_bundle_has_one_valid_observation_per_finding():
    item = _item(FUSION, AUDIO, VISION)
    bundle = build_bundle(item, JOB, "schizodot-media", "urn:schizodot:patient-id")
    parsed = Bundle.model_validate_json(json.dumps(bundle))  # the library accepts what we send
    assert parsed.type == "collection" and len(parsed.entry) == 5
    resources = _resources(bundle)
    assert set(resources) == {"Media", "Device", "emotional-state", "medication-intake", "risk-level"}
    media_url = f"urn:uuid:{resources['Media']['id']}"
    for name in ("emotional-state", "medication-intake", "risk-level"):
        observation = resources[name]
        Observation.model_validate(observation)
        assert observation["status"] == "final"
        assert observation["subject"]["reference"] == "Patient/patient-001"
        assert observation["effectiveDateTime"] == "2024-01-15T12:05:30.123456Z"
        assert observation["derivedFrom"] == [{"reference": media_url}]
    assert resources["emotional-state"]["valueCodeableConcept"]["coding"][0]["code"] == "happy"
    assert resources["emotional-state"]["category"][0]["coding"][0]["code"] == "exam"
    assert resources["medication-intake"]["valueCodeableConcept"]["coding"][0]["code"] == "inconclusive"
    pill = next(c for c in resources["medication-intake"]["component"] if c["code"]["coding"][0]["code"] == "pill-visible")
    assert "valueBoolean" not in pill and pill["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    risk = resources["risk-level"]
    assert risk["valueCodeableConcept"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/risk-probability", "code": "moderate", "display": "Moderate"}
    assert risk["component"][0]["code"]["coding"][0]["code"] == "medication_intake_unverified"
    assert any("First check-in" in note["text"] for note in risk["note"])
    assert resources["Media"]["content"]["url"] == f"s3://schizodot-media/{JOB['s3_key']}"
    # The same job always gives the same bundle (ids derive from the job id).
    assert build_bundle(item, JOB, "schizodot-media", "urn:schizodot:patient-id") == bundle


def test_audio_only_checkin_marks_the_face_as_not_performed_never_filled_in():
    fusion = {**FUSION, "multimodal_fusion": {**FUSION["multimodal_fusion"], "face_emotion": None,
                                              "modalities_not_assessed": {"vision": "the recording has no video track"}}}
    item = _item(fusion, AUDIO, None, {"vision": "the recording has no video track"})
    bundle = build_bundle(item, {**JOB, "content_type": "audio/mp4"}, "b", "urn:schizodot:patient-id")
    Bundle.model_validate(bundle)
    resources = _resources(bundle)
    assert resources["Media"]["type"]["coding"][0]["code"] == "audio"
    face = next(c for c in resources["emotional-state"]["component"] if c["code"]["coding"][0]["code"] == "facial-emotion")
    assert "valueCodeableConcept" not in face
    assert face["dataAbsentReason"]["text"] == "the recording has no video track"
    intake = resources["medication-intake"]
    assert intake["valueCodeableConcept"]["coding"][0]["code"] == "inconclusive"


def test_emotion_not_assessed_at_all_has_a_data_absent_reason():
    fusion = {**FUSION, "multimodal_fusion": {**FUSION["multimodal_fusion"], "overall_emotion": None,
                                              "face_emotion": None, "voice_emotion": None, "confidence": 0.0,
                                              "modalities_not_assessed": {"audio": "no speech", "vision": "no face"}}}
    bundle = build_bundle(_item(fusion, None, None), JOB, "b", "urn:schizodot:patient-id")
    emotion = _resources(bundle)["emotional-state"]
    assert "valueCodeableConcept" not in emotion
    assert emotion["dataAbsentReason"]["text"] == "audio: no speech; vision: no face"


def test_patient_ids_that_are_not_fhir_ids_are_sent_as_identifiers_only():
    assert patient_reference("patient_001", "urn:x") == {
        "identifier": {"system": "urn:x", "value": "patient_001"}, "display": "patient patient_001"}
    assert patient_reference("patient-001", "urn:x")["reference"] == "Patient/patient-001"


def test_the_library_rejects_what_fhir_does_not_allow():
    bad = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "valueString": "a", "valueBoolean": True}
    with pytest.raises(ValidationError):
        Observation.model_validate(bad)


def test_results_event_is_a_cloudevent_carrying_the_bundle():
    item = _item(FUSION, AUDIO, VISION)
    bundle = build_bundle(item, JOB, "schizodot-media", "urn:schizodot:patient-id")
    event = json.loads(encode_results_event(JOB["job_id"], bundle, "urn:schizodot:results", FHIR_VERSION))
    assert event["specversion"] == "1.0" and event["type"] == RESULTS_AVAILABLE
    assert event["id"] == event_id(JOB["job_id"]) and event["subject"] == JOB["job_id"]
    assert event["datacontenttype"] == "application/fhir+json" and event["fhirversion"] == "4.0.1"
    assert Bundle.model_validate(event["data"]).id == bundle["id"]
