"""The FHIR resource set for the EHR, validated by fhir.resources."""

from __future__ import annotations

import json

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.observation import Observation
from pydantic import ValidationError

from services.fusion.findings import build_results
from services.fusion.tests.checkins import as_audio, as_vision
from services.results.ehr.fhir import FHIR_VERSION, UCUM, build_bundle, patient_reference, quantity
from services.results.ehr.publisher import RESULTS_AVAILABLE, encode_results_event, event_id
from services.results.stage.user_item import build_user_item
from shared.domain.findings import FusionDocument, ResultItem
from shared.domain.job import Job
from shared.domain.markers import measured, not_assessed
from shared.domain.patients import ClinicPatientId
from shared.domain.stored_results import stored_result

JOB = {"job_id": "job-abc123def456", "patient_id": "patient-001", "s3_key": "uploads/patient-001/job-abc123def456/x.mp4",
       "filename": "x.mp4", "content_type": "video/mp4",
       "created_at": "2024-01-15T12:00:00.000000Z", "started_at": "2024-01-15T12:01:00.000000Z"}
NOTABLE = {"available": True, "checkins": 6, "mean": 210.0, "sd": 7.07, "z_score": -6.0, "relative_change": -0.286,
           "notable": True, "direction": "lower"}
VOCAL = {
    "speech_rate": {**measured(150.0, "syllables per min", "syllable nuclei (de Jong & Wempe 2009)"),
                    "baseline": NOTABLE},
    "pitch_variability": {**measured(2.1, "semitones", "Praat pitch", ["short_speech"]),
                          "baseline": {"available": False, "checkins": 1, "notable": False,
                                       "reason": "measured the same way in 1 earlier check-in(s); a baseline needs 3"}},
    "jitter": {**not_assessed("%", "Praat jitter (local)", "the recording is clipped (3.0 % of speech samples at "
                                                           "full scale)"), "baseline": {
        "available": False, "checkins": 0, "notable": False, "reason": "not measured in this check-in"}},
}
VIDEO = {"head_movement": {**measured(5.5, "deg/s", "landmarker pose"), "baseline": {
    "available": True, "checkins": 4, "mean": 6.0, "sd": 0.4, "z_score": -1.0, "relative_change": -0.08,
    "notable": False}}}
FUSION = {
    "analysed_at": "2024-01-15T12:05:30.123456Z",
    "multimodal_fusion": {
        "emotional_consistency": "single_modality", "overall_emotion": "happy", "overall_emotion_basis": ["face"],
        "confidence": 0.54, "risk_level": "moderate", "risk_factors": ["speech_production_below_baseline"],
        "risk_evidence": [{"factor": "speech_production_below_baseline", "severity": "moderate",
                           "evidence": "speech rate 150 syllables per min, below the patient's usual 210"}],
        "modalities_assessed": ["audio", "vision"], "modalities_not_assessed": {},
        "emotion_not_used": {"voice": "no validated speech-emotion model is configured"},
        "face_emotion": "happy", "voice_emotion": None, "method": "rule_based_v3",
        "adherence": {"status": "not_assessed", "assessed": False, "reason": "no pill detector is configured"},
        "baseline": {"available": True, "changes": ["speech rate 150 syllables per min, below the patient's usual"]},
    },
    "clinical_summary": {"emotional_state": "Patient appears in good spirits (from the facial expression)",
                         "medication_adherence": "Not assessed - no pill detector is configured",
                         "risk_assessment": "Moderate risk - speech production below baseline",
                         "recommendations": ["Discuss the change from the patient's usual check-ins with them"],
                         "change_from_baseline": "Compared with the patient's last 6 check-in(s): speech rate ...",
                         "flags": [], "generated_by": "rule_based", "timestamp": "2024-01-15T12:05:30.123456Z"},
    "vocal_markers": VOCAL, "video_markers": VIDEO,
}
AUDIO = {"audio_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                           "method": None, "reason": "no validated speech-emotion model is configured"},
         "vocal_markers": {}}
VISION = {"facial_emotion": {"primary_emotion": "happy", "confidence": 0.9, "all_emotions": [], "face_detected": True,
                             "frame_count": 30, "method": "fer + face-api", "assessed": True,
                             "validation": {"balanced_recall": 0.57, "dataset": "FER2013", "n": 3589}},
          "video_markers": {},
          "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True, "compliance_score": None,
                         "confidence": 0.5, "verification_status": "not_assessed", "assessed": False,
                         "reason": "no pill detector is configured",
                         "pill_detector": {"configured": False, "model": None, "validated_on_real_pills": False,
                                           "note": None}}}


def _job(job: dict, skipped: dict[str, str] | None = None) -> Job:
    return Job.from_item({**job, "status": "processing", "updated_at": job["started_at"],
                          "metadata": {"pipeline": {"skipped": skipped or {}}}})


def _item(fusion: dict, audio: dict | None, vision: dict | None, skipped: dict[str, str] | None = None) -> ResultItem:
    """The SchizodotUsers item results saves for JOB, from fusion's findings document, as read back."""
    job = _job(JOB, skipped)
    findings = FusionDocument.model_validate({
        "job_id": job.job_id, "analysed_at": fusion["analysed_at"],
        "results": build_results(fusion, as_audio(audio), as_vision(vision), skipped or {})})
    return stored_result(build_user_item(job, findings).stored())


def _resources(bundle: dict) -> dict[str, dict]:
    found = {}
    for entry in bundle["entry"]:
        resource = entry["resource"]
        name = resource["resourceType"]
        if name == "Observation":
            name = resource["code"]["coding"][0]["code"]
        found[name] = resource
    return found


def _bundle(fusion=FUSION, audio=AUDIO, vision=VISION, skipped=None, job=JOB) -> dict:
    item = _item(fusion, audio, vision, skipped)
    return build_bundle(item, _job(job, skipped), "schizodot-media", "urn:schizodot:patient-id")


def _component(observation: dict, code: str) -> dict:
    return next(c for c in observation["component"] if c["code"]["coding"][0]["code"] == code)


def test_bundle_has_one_valid_observation_per_assessed_finding():
    bundle = _bundle()
    parsed = Bundle.model_validate_json(json.dumps(bundle))  # the library accepts what we send
    assert parsed.type == "collection"
    resources = _resources(bundle)
    # no medication-intake Observation: no pill detector is a fact about the deployment, not the patient
    assert set(resources) == {"Media", "Device", "vocal-markers", "video-markers", "emotional-state", "risk-level"}
    media_url = f"urn:uuid:{resources['Media']['id']}"
    for name in ("vocal-markers", "video-markers", "emotional-state", "risk-level"):
        observation = resources[name]
        Observation.model_validate(observation)
        assert observation["status"] == "final"
        assert observation["subject"]["reference"] == "Patient/patient-001"
        assert observation["effectiveDateTime"] == "2024-01-15T12:05:30.123456Z"
        assert observation["derivedFrom"] == [{"reference": media_url}]
    emotion = resources["emotional-state"]
    assert emotion["valueCodeableConcept"]["coding"][0]["code"] == "happy"
    assert [c["code"]["coding"][0]["code"] for c in emotion["component"]] == ["facial-emotion", "fusion-confidence"]
    assert "voice not used: no validated speech-emotion model is configured" in emotion["method"]["text"]
    risk = resources["risk-level"]
    assert risk["valueCodeableConcept"]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/risk-probability", "code": "moderate", "display": "Moderate"}
    assert risk["component"][0]["code"]["coding"][0]["code"] == "speech_production_below_baseline"
    assert any(note["text"] == "Not assessed - no pill detector is configured" for note in risk["note"])
    assert resources["Media"]["content"]["url"] == f"s3://schizodot-media/{JOB['s3_key']}"
    assert _bundle() == bundle  # the same job always gives the same bundle (ids derive from the job id)


def test_markers_carry_values_in_ucum_units_and_the_patients_baseline():
    resources = _resources(_bundle())
    vocal = resources["vocal-markers"]
    assert vocal["category"][0]["coding"][0]["code"] == "exam"
    rate = _component(vocal, "speech_rate")
    assert rate["valueQuantity"] == {"value": 150.0, "unit": "syllables per min", "system": UCUM,
                                     "code": "{syllables}/min"}
    assert rate["interpretation"][0]["coding"][0]["code"] == "L"
    assert rate["referenceRange"][0]["text"].startswith("the patient's own baseline: mean 210 syllables per min (sd 7.07)")
    pitch = _component(vocal, "pitch_variability")
    assert pitch["valueQuantity"] == {"value": 2.1, "unit": "semitones"}  # UCUM has no semitone: unit text only
    assert "interpretation" not in pitch and "referenceRange" not in pitch
    jitter = _component(vocal, "jitter")
    assert "valueQuantity" not in jitter and jitter["dataAbsentReason"]["coding"][0]["code"] == "not-performed"
    assert jitter["dataAbsentReason"]["text"].startswith("the recording is clipped")
    assert any(n["text"] == "pitch_variability (semitones): Praat pitch; quality flags: short_speech"
               for n in vocal["note"])
    head = _component(resources["video-markers"], "head_movement")
    assert head["valueQuantity"]["code"] == "deg/s" and "interpretation" not in head
    assert "z -1.00" in head["referenceRange"][0]["text"]


@pytest.mark.parametrize(("unit", "code"), [("%", "%"), ("Hz", "Hz"), ("dB", "dB"), ("s", "s"), ("per min", "/min"),
                                            ("count", "{count}"), ("words per min", "{words}/min"),
                                            ("blendshape activity (0-1)", "1")])
def test_each_marker_unit_has_its_ucum_code(unit, code):
    assert quantity(1.5, unit) == {"value": 1.5, "unit": unit, "system": UCUM, "code": code}


def test_no_emotion_observation_when_no_emotion_was_assessed():
    fusion = {**FUSION, "multimodal_fusion": {**FUSION["multimodal_fusion"], "overall_emotion": None,
                                              "overall_emotion_basis": [], "face_emotion": None,
                                              "emotional_consistency": "not_assessed", "confidence": 0.0}}
    assert "emotional-state" not in _resources(_bundle(fusion))


def test_intake_is_an_observation_when_a_detector_assessed_it():
    compliance = {**VISION["compliance"], "verification_status": "inconclusive", "assessed": True,
                  "pill_detected": False, "reason": "the pill was not seen on the tongue",
                  "pill_detector": {"configured": True, "model": "pills.onnx", "validated_on_real_pills": False,
                                    "note": "synthetic-trained, not validated on real pills"}}
    fusion = {**FUSION, "multimodal_fusion": {**FUSION["multimodal_fusion"], "adherence": {
        "status": "inconclusive", "assessed": True, "reason": "the pill was not seen on the tongue"}}}
    intake = _resources(_bundle(fusion, vision={**VISION, "compliance": compliance}))["medication-intake"]
    Observation.model_validate(intake)
    assert intake["valueCodeableConcept"]["coding"][0]["code"] == "inconclusive"
    assert _component(intake, "pill-visible")["valueBoolean"] is False
    assert [n["text"] for n in intake["note"]] == ["the pill was not seen on the tongue",
                                                   "synthetic-trained, not validated on real pills"]


def test_audio_only_checkin_has_no_face_nor_intake_observation():
    fusion = {**FUSION, "video_markers": {},
              "multimodal_fusion": {**FUSION["multimodal_fusion"], "overall_emotion": None, "face_emotion": None,
                                    "overall_emotion_basis": [],
                                    "adherence": {"status": "not_assessed", "assessed": False,
                                                  "reason": "the check-in has no video"},
                                    "modalities_not_assessed": {"vision": "the recording has no video track"}}}
    bundle = _bundle(fusion, vision=None, skipped={"vision": "the recording has no video track"},
                     job={**JOB, "content_type": "audio/mp4"})
    Bundle.model_validate(bundle)
    resources = _resources(bundle)
    assert resources["Media"]["type"]["coding"][0]["code"] == "audio"
    assert set(resources) == {"Media", "Device", "vocal-markers", "risk-level"}


def test_transcript_flags_reach_the_risk_observation_as_notes():
    flag = {"category": "self_harm", "phrase": "hurt myself", "start": 12.3, "end": 12.9, "severity": "high",
            "note": "for clinician review, not a diagnosis", "context": "I want to hurt myself",
            "pattern": "self_harm/hurt_myself"}
    fusion = {**FUSION, "clinical_summary": {**FUSION["clinical_summary"], "flags": [flag]}}
    risk = _resources(_bundle(fusion))["risk-level"]
    assert ('Transcript flag (self harm, for clinician review, not a diagnosis): "hurt myself" at 12.3 s'
            in [n["text"] for n in risk["note"]])


def test_patient_ids_that_are_not_fhir_ids_are_sent_as_identifiers_only():
    assert patient_reference(ClinicPatientId("patient_001"), "urn:x") == {
        "identifier": {"system": "urn:x", "value": "patient_001"}, "display": "patient patient_001"}
    assert patient_reference(ClinicPatientId("patient-001"), "urn:x")["reference"] == "Patient/patient-001"


def test_the_library_rejects_what_fhir_does_not_allow():
    bad = {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
           "valueString": "a", "valueBoolean": True}
    with pytest.raises(ValidationError):
        Observation.model_validate(bad)


def test_results_event_is_a_cloudevent_carrying_the_bundle():
    bundle = _bundle()
    event = json.loads(encode_results_event(JOB["job_id"], bundle, "urn:schizodot:results", FHIR_VERSION))
    assert event["specversion"] == "1.0" and event["type"] == RESULTS_AVAILABLE
    assert event["id"] == event_id(JOB["job_id"]) and event["subject"] == JOB["job_id"]
    assert event["datacontenttype"] == "application/fhir+json" and event["fhirversion"] == "4.0.1"
    assert Bundle.model_validate(event["data"]).id == bundle["id"]
