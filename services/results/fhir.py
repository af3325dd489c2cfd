"""A completed check-in as a FHIR R4 resource set for the EHR.

Built and validated with `fhir.resources` (8.x serves the R4 line as its `R4B`
models, FHIR 4.3.0; Observation, Media, Device and Bundle have the same
structure in R4 4.0.1). The Bundle (type `collection`) holds:
- a Media resource for the check-in recording (s3 URL, content type);
- a Device resource for the analysis software and its method;
- one Observation per finding: emotion (category exam), medication intake
  (category therapy) and risk (category survey), each `final`, about the
  patient, at the analysis time, `derivedFrom` the Media and made by the Device.
LOINC has no codes for camera-derived emotion, observed intake or this rule
set's risk, so codes come from SchizoDot's own code systems (`urn:schizodot:...`);
the risk value uses HL7's risk-probability codes, categories HL7's
observation-category codes. What was not assessed carries a `dataAbsentReason`
(not-performed) with the reason, never a value.
Ids are derived from the job id, so a job always yields the same bundle.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from fhir.resources.R4B.bundle import Bundle

FHIR_VERSION = "4.0.1"  # what the resources conform to (see the module docstring)
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
MEDIA_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/media-type"
UCUM = "http://unitsofmeasure.org"
FINDING_SYSTEM = "urn:schizodot:codesystem:checkin-finding"
EMOTION_SYSTEM = "urn:schizodot:codesystem:emotion"
CONSISTENCY_SYSTEM = "urn:schizodot:codesystem:emotional-consistency"
VERIFICATION_SYSTEM = "urn:schizodot:codesystem:medication-verification"
RISK_FACTOR_SYSTEM = "urn:schizodot:codesystem:risk-factor"
SEVERITY_SYSTEM = "urn:schizodot:codesystem:risk-factor-severity"
JOB_ID_SYSTEM = "urn:schizodot:job-id"
OBSERVATION_ID_SYSTEM = "urn:schizodot:observation-id"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def _uid(job_id: str, name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:schizodot:{job_id}:{name}"))


def _code(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding], "text": display or code.replace("_", " ")}


def _absent(reason: str | None) -> dict[str, Any]:
    return {"coding": [{"system": DATA_ABSENT_SYSTEM, "code": "not-performed", "display": "Not Performed"}],
            "text": reason or "not assessed"}


def _fraction(value: float) -> dict[str, Any]:
    return {"value": round(float(value), 4), "unit": "1", "system": UCUM, "code": "1"}


def _component(code: str, display: str, value_key: str | None, value: Any, absent: str | None = None) -> dict:
    component: dict[str, Any] = {"code": _code(FINDING_SYSTEM, code, display)}
    if value_key is None or value is None:
        component["dataAbsentReason"] = _absent(absent)
    else:
        component[value_key] = value
    return component


def _label(system: str, label: str | None) -> dict[str, Any] | None:
    return _code(system, label) if label else None


def patient_reference(patient_id: str, identifier_system: str) -> dict[str, Any]:
    """A literal Patient reference where our id is a valid FHIR id, and always the identifier."""
    reference: dict[str, Any] = {"identifier": {"system": identifier_system, "value": patient_id},
                                 "display": f"patient {patient_id}"}
    if _FHIR_ID.match(patient_id):
        reference["reference"] = f"Patient/{patient_id}"
    return reference


def build_bundle(
    item: dict[str, Any], job: dict[str, Any], bucket: str, patient_identifier_system: str
) -> dict[str, Any]:
    """The FHIR Bundle (as JSON-ready dict) for one SchizodotUsers item, validated by fhir.resources."""
    job_id = item["job_id"]
    results = item["results"]
    fusion = results["multimodal_fusion"]
    summary = results["clinical_summary"]
    face = results.get("facial_emotion") or {}
    voice = results.get("audio_emotion") or {}
    compliance = results.get("compliance") or {}
    when = item["analyzed_at"]
    subject = patient_reference(item["user_id"], patient_identifier_system)
    media_id, device_id = _uid(job_id, "media"), _uid(job_id, "device")
    has_video = item.get("analysis_type") != "audio_only"

    media = {
        "resourceType": "Media",
        "id": media_id,
        "identifier": [{"system": JOB_ID_SYSTEM, "value": job_id}],
        "status": "completed",
        "type": _code(MEDIA_TYPE_SYSTEM, "video" if has_video else "audio", "Video" if has_video else "Audio"),
        "subject": subject,
        "createdDateTime": job.get("created_at") or when,
        "issued": when,
        "content": {"contentType": job.get("content_type") or "application/octet-stream",
                    "url": f"s3://{bucket}/{item['s3_key']}", "title": job.get("filename") or item["s3_key"]},
    }
    device = {
        "resourceType": "Device",
        "id": device_id,
        "deviceName": [{"name": "SchizoDot check-in analysis", "type": "user-friendly-name"}],
        "version": [{"value": str(fusion.get("method", "unknown"))}],
        "note": [{"text": "Automated analysis of a recorded check-in; findings support, and do not replace, "
                          "clinical judgement."}],
    }

    def observation(name: str, display: str, category: str, **fields: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": _uid(job_id, name),
            "identifier": [{"system": OBSERVATION_ID_SYSTEM, "value": f"{job_id}/{name}"}],
            "status": "final",
            "category": [_code(CATEGORY_SYSTEM, category, category.capitalize())],
            "code": _code(FINDING_SYSTEM, name, display),
            "subject": subject,
            "effectiveDateTime": when,
            "issued": when,
            "device": {"reference": f"urn:uuid:{device_id}"},
            "derivedFrom": [{"reference": f"urn:uuid:{media_id}"}],
            **fields,
        }

    not_assessed = fusion.get("modalities_not_assessed") or {}
    overall = _label(EMOTION_SYSTEM, fusion.get("overall_emotion"))
    expressivity = (face.get("expressivity") or {}).get("blendshape_activity")
    emotion = observation(
        "emotional-state", "Emotional state from face and voice", "exam",
        method={"text": f"{fusion.get('method')}: facial and speech emotion combined by confidence-weighted rules"
                        + "".join(f"; {part} by {m}" for part, m in (("face", face.get("method")),
                                                                    ("voice", voice.get("method"))) if m)},
        **({"valueCodeableConcept": overall} if overall else
           {"dataAbsentReason": _absent("; ".join(f"{m}: {why}" for m, why in not_assessed.items()))}),
    )
    emotion["component"] = [
        _component("facial-emotion", "Facial emotion", "valueCodeableConcept",
                   _label(EMOTION_SYSTEM, fusion.get("face_emotion")), not_assessed.get("vision") or face.get("reason")),
        _component("voice-emotion", "Speech emotion", "valueCodeableConcept",
                   _label(EMOTION_SYSTEM, fusion.get("voice_emotion")), not_assessed.get("audio") or voice.get("reason")),
        _component("emotional-consistency", "Face and voice consistency", "valueCodeableConcept",
                   _label(CONSISTENCY_SYSTEM, fusion.get("emotional_consistency"))),
        _component("fusion-confidence", "Confidence of the overall emotion", "valueQuantity",
                   _fraction(fusion["confidence"]) if fusion.get("confidence") is not None else None),
        _component("facial-expressivity", "Facial expressivity (blendshape activity)", "valueQuantity",
                   _fraction(expressivity) if expressivity is not None else None,
                   (face.get("expressivity") or {}).get("reason") or face.get("reason")),
    ]

    status = compliance.get("verification_status") or "inconclusive"
    score = compliance.get("compliance_score")
    intake = observation(
        "medication-intake", "Medication intake observed on video", "therapy",
        valueCodeableConcept=_code(VERIFICATION_SYSTEM, status),
        component=[
            _component("face-in-view", "Face in view", "valueBoolean", compliance.get("face_detected"),
                       compliance.get("reason")),
            _component("hand-in-view", "Hand in view", "valueBoolean", compliance.get("hand_detected"),
                       compliance.get("reason")),
            _component("pill-visible", "Pill visible", "valueBoolean", compliance.get("pill_detected"),
                       "pill detection was not assessed"),
            _component("compliance-score", "Compliance score", "valueQuantity",
                       _fraction(score) if score is not None else None, compliance.get("reason")),
        ],
    )
    if compliance.get("reason"):
        intake["note"] = [{"text": compliance["reason"]}]

    level = fusion["risk_level"]
    risk = observation(
        "risk-level", "Check-in risk level", "survey",
        valueCodeableConcept=_code(RISK_PROBABILITY_SYSTEM, level, level.capitalize()),
        method={"text": f"{fusion.get('method')}: documented rules over the findings and the patient's own baseline"},
        component=[
            {"code": _code(RISK_FACTOR_SYSTEM, e["factor"]),
             "valueCodeableConcept": {**_code(SEVERITY_SYSTEM, e["severity"]), "text": e["evidence"] or e["severity"]}}
            for e in fusion.get("risk_evidence") or []
        ],
        note=[{"text": text} for text in (
            summary.get("risk_assessment"), summary.get("emotional_state"), summary.get("medication_adherence"),
            summary.get("change_from_baseline"),
            "Recommendations: " + "; ".join(summary.get("recommendations") or []) if summary.get("recommendations") else None,
            f"Summary generated by {summary.get('generated_by')}",
        ) if text],
    )
    if not risk["component"]:
        risk.pop("component")

    entries = [media, device, emotion, intake, risk]
    document = {
        "resourceType": "Bundle",
        "id": _uid(job_id, "bundle"),
        "identifier": {"system": JOB_ID_SYSTEM, "value": job_id},
        "type": "collection",
        "timestamp": when,
        "entry": [{"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource} for resource in entries],
    }
    # Validation: the library raises on any structural error (missing element,
    # wrong type, two value[x], bad date, unknown element).
    return json.loads(Bundle.model_validate(document).model_dump_json(exclude_none=True))
