"""A completed check-in as a FHIR R4 resource set for the EHR.

Built and validated with `fhir.resources` (8.x serves the R4 line as its `R4B`
models, FHIR 4.3.0; Observation, Media, Device and Bundle have the same
structure in R4 4.0.1). The Bundle (type `collection`) holds:
- a Media resource for the check-in recording (s3 URL, content type);
- a Device resource for the analysis software and its method;
- one Observation per finding, each `final`, about the patient, at the analysis
  time, `derivedFrom` the Media and made by the Device:
  - vocal markers and video markers (category exam): one component per marker,
    its value as a Quantity with its UCUM unit where UCUM has one, the patient's
    own baseline as the reference range and a notable change as the
    interpretation (H/L); a marker that was not assessed carries a
    `dataAbsentReason` with the reason, never a value;
  - emotional state (category exam), only when an emotion was assessed by a
    method with measured validity: no Observation is made of what was not assessed;
  - medication intake (category therapy), only when adherence was assessed (no
    Observation says "not assessed" because the deployment has no pill detector:
    that is a fact about the deployment, not the patient);
  - risk (category survey), with one component per risk factor and the clinical
    summary, transcript flags included, as notes.
LOINC has no codes for these camera- and microphone-derived findings, so codes
come from SchizoDot's own code systems (`urn:schizodot:...`); the risk value uses
HL7's risk-probability codes, categories HL7's observation-category codes.
Ids are derived from the job id, so a job always yields the same bundle.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from fhir.resources.R4B.bundle import Bundle

from shared.domain.findings import ClinicalSummary, MarkerBaseline, MultimodalFusion, ResultItem, Results, StoredMarkers
from shared.domain.job import Job
from shared.domain.patients import ClinicPatientId

FHIR_VERSION = "4.0.1"  # what the resources conform to (see the module docstring)
CATEGORY_SYSTEM = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
RISK_PROBABILITY_SYSTEM = "http://terminology.hl7.org/CodeSystem/risk-probability"
INTERPRETATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"
MEDIA_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/media-type"
UCUM = "http://unitsofmeasure.org"
FINDING_SYSTEM = "urn:schizodot:codesystem:checkin-finding"
MARKER_SYSTEM = "urn:schizodot:codesystem:marker"
EMOTION_SYSTEM = "urn:schizodot:codesystem:emotion"
CONSISTENCY_SYSTEM = "urn:schizodot:codesystem:emotional-consistency"
VERIFICATION_SYSTEM = "urn:schizodot:codesystem:medication-verification"
RISK_FACTOR_SYSTEM = "urn:schizodot:codesystem:risk-factor"
SEVERITY_SYSTEM = "urn:schizodot:codesystem:risk-factor-severity"
JOB_ID_SYSTEM = "urn:schizodot:job-id"
OBSERVATION_ID_SYSTEM = "urn:schizodot:observation-id"
_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

# Our marker units and their UCUM codes; semitones have none (the unit is sent as text).
UCUM_CODES = {
    "%": "%", "Hz": "Hz", "dB": "dB", "s": "s", "per min": "/min", "count": "{count}",
    "syllables per min": "{syllables}/min", "words per min": "{words}/min", "deg/s": "deg/s",
    "blendshape activity (0-1)": "1",
}
MARKER_PANELS = (("vocal_markers", "vocal-markers", "Vocal markers of the check-in"),
                 ("video_markers", "video-markers", "Video markers of the check-in"))


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


def quantity(value: float, unit: str) -> dict[str, Any]:
    """A FHIR Quantity, coded in UCUM when the unit has a UCUM code."""
    out: dict[str, Any] = {"value": round(float(value), 4), "unit": unit}
    if unit in UCUM_CODES:
        out |= {"system": UCUM, "code": UCUM_CODES[unit]}
    return out


def _component(code: str, display: str, value_key: str | None, value: Any, absent: str | None = None) -> dict:
    component: dict[str, Any] = {"code": _code(FINDING_SYSTEM, code, display)}
    if value_key is None or value is None:
        component["dataAbsentReason"] = _absent(absent)
    else:
        component[value_key] = value
    return component


def _label(system: str, label: str | None) -> dict[str, Any] | None:
    return _code(system, label) if label else None


def patient_reference(patient_id: ClinicPatientId, identifier_system: str) -> dict[str, Any]:
    """A literal Patient reference where our id is a valid FHIR id, and always the identifier."""
    reference: dict[str, Any] = {"identifier": {"system": identifier_system, "value": str(patient_id)},
                                 "display": f"patient {patient_id}"}
    if _FHIR_ID.match(patient_id):
        reference["reference"] = f"Patient/{patient_id}"
    return reference


@dataclass(frozen=True)
class _Checkin:
    """What every resource of one bundle refers to."""

    job_id: str
    when: str
    subject: dict[str, Any]
    media_id: str
    device_id: str

    def observation(self, name: str, display: str, category: str, **fields: Any) -> dict[str, Any]:
        return {
            "resourceType": "Observation",
            "id": _uid(self.job_id, name),
            "identifier": [{"system": OBSERVATION_ID_SYSTEM, "value": f"{self.job_id}/{name}"}],
            "status": "final",
            "category": [_code(CATEGORY_SYSTEM, category, category.capitalize())],
            "code": _code(FINDING_SYSTEM, name, display),
            "subject": self.subject,
            "effectiveDateTime": self.when,
            "issued": self.when,
            "device": {"reference": f"urn:uuid:{self.device_id}"},
            "derivedFrom": [{"reference": f"urn:uuid:{self.media_id}"}],
            **fields,
        }


def build_bundle(item: ResultItem, job: Job, bucket: str, patient_identifier_system: str) -> dict[str, Any]:
    """The FHIR Bundle (as JSON-ready dict) for one SchizodotUsers item and its job, validated by
    fhir.resources. The patient is named by the clinic's own id."""
    job_id = item.job_id
    results = item.results
    checkin = _Checkin(job_id, item.analyzed_at, patient_reference(item.patient, patient_identifier_system),
                       _uid(job_id, "media"), _uid(job_id, "device"))
    entries = [media_resource(checkin, item, job, bucket), device_resource(checkin, results.multimodal_fusion)]
    entries += [marker_observation(checkin, getattr(results, section), name, display)
                for section, name, display in MARKER_PANELS if getattr(results, section)]
    entries += emotion_observation(checkin, results) + intake_observation(checkin, results)
    entries.append(risk_observation(checkin, results.multimodal_fusion, results.clinical_summary))
    document = {
        "resourceType": "Bundle",
        "id": _uid(job_id, "bundle"),
        "identifier": {"system": JOB_ID_SYSTEM, "value": job_id},
        "type": "collection",
        "timestamp": checkin.when,
        "entry": [{"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource} for resource in entries],
    }
    # Validation: the library raises on any structural error (missing element,
    # wrong type, two value[x], bad date, unknown element).
    return json.loads(Bundle.model_validate(document).model_dump_json(exclude_none=True))


def media_resource(checkin: _Checkin, item: ResultItem, job: Job, bucket: str) -> dict[str, Any]:
    has_video = item.analysis_type != "audio_only"
    return {
        "resourceType": "Media",
        "id": checkin.media_id,
        "identifier": [{"system": JOB_ID_SYSTEM, "value": checkin.job_id}],
        "status": "completed",
        "type": _code(MEDIA_TYPE_SYSTEM, "video" if has_video else "audio", "Video" if has_video else "Audio"),
        "subject": checkin.subject,
        "createdDateTime": job.created_at or checkin.when,
        "issued": checkin.when,
        "content": {"contentType": job.content_type or "application/octet-stream",
                    "url": f"s3://{bucket}/{item.s3_key}", "title": job.filename or item.s3_key},
    }


def device_resource(checkin: _Checkin, fusion: MultimodalFusion) -> dict[str, Any]:
    return {
        "resourceType": "Device",
        "id": checkin.device_id,
        "deviceName": [{"name": "SchizoDot check-in analysis", "type": "user-friendly-name"}],
        "version": [{"value": str(fusion.method if "method" in fusion.model_fields_set else "unknown")}],
        "note": [{"text": "Automated analysis of a recorded check-in; findings support, and do not replace, "
                          "clinical judgement."}],
    }


def marker_observation(checkin: _Checkin, markers: StoredMarkers, name: str, display: str) -> dict[str, Any]:
    """One component per marker: value and unit, or why it was not assessed; the baseline as reference range."""
    components, notes = [], []
    for marker_name, marker in markers.items():
        component: dict[str, Any] = {"code": _code(MARKER_SYSTEM, marker_name, marker_name.replace("_", " "))}
        if marker.assessed and marker.value is not None:
            component["valueQuantity"] = quantity(marker.value, str(marker.unit))
            component |= _baseline_fields(marker.baseline or MarkerBaseline(), str(marker.unit))
        else:
            component["dataAbsentReason"] = _absent(marker.reason)
        components.append(component)
        flags = f"; quality flags: {', '.join(marker.quality_flags)}" if marker.quality_flags else ""
        notes.append({"text": f"{marker_name} ({marker.unit}): {marker.method}{flags}"})
    return checkin.observation(name, display, "exam", component=components, note=notes)


def _baseline_fields(baseline: MarkerBaseline, unit: str) -> dict[str, Any]:
    """The patient's own baseline as the reference range, and a notable change as H or L."""
    if not baseline.available:
        return {}
    text = (f"the patient's own baseline: mean {baseline.mean:.4g} {unit} (sd {baseline.sd:.3g}) over "
            f"{baseline.checkins} earlier check-ins; z {baseline.z_score:+.2f}")
    fields: dict[str, Any] = {"referenceRange": [{"text": text}]}
    if baseline.notable:
        high = baseline.direction == "higher"
        fields["interpretation"] = [{
            "coding": [{"system": INTERPRETATION_SYSTEM, "code": "H" if high else "L",
                        "display": "High" if high else "Low"}],
            "text": f"notably {'above' if high else 'below'} the patient's own baseline"}]
    return fields


def emotion_observation(checkin: _Checkin, results: Results) -> list[dict[str, Any]]:
    """The emotional state, only when a validated face or voice emotion was assessed."""
    fusion = results.multimodal_fusion
    if not fusion.overall_emotion:
        return []
    basis = fusion.overall_emotion_basis or []
    methods = {"face": results.facial_emotion.method, "voice": results.audio_emotion.method}
    sides = {"face": fusion.face_emotion, "voice": fusion.voice_emotion}
    components = [
        _component(f"{'facial' if side == 'face' else 'voice'}-emotion",
                   "Facial emotion" if side == "face" else "Speech emotion", "valueCodeableConcept",
                   _label(EMOTION_SYSTEM, sides.get(side)))
        for side in basis
    ]
    if fusion.emotional_consistency in ("consistent", "inconsistent"):
        components.append(_component("emotional-consistency", "Face and voice consistency", "valueCodeableConcept",
                                     _label(CONSISTENCY_SYSTEM, fusion.emotional_consistency)))
    components.append(_component("fusion-confidence", "Confidence of the overall emotion", "valueQuantity",
                                 _fraction(fusion.confidence or 0.0)))
    not_used = "".join(f"; {side} not used: {why}" for side, why in (fusion.emotion_not_used or {}).items())
    return [checkin.observation(
        "emotional-state", "Emotional state from face and voice", "exam",
        method={"text": f"{fusion.method}: emotion labels combined by confidence-weighted rules"
                        + "".join(f"; {side} by {methods.get(side)}" for side in basis if methods.get(side))
                        + not_used},
        valueCodeableConcept=_label(EMOTION_SYSTEM, fusion.overall_emotion),
        component=components,
    )]


def intake_observation(checkin: _Checkin, results: Results) -> list[dict[str, Any]]:
    """Medication intake, only when adherence was assessed (a pill detector, a video)."""
    compliance = results.compliance
    adherence = results.multimodal_fusion.adherence
    status = (adherence.status if adherence else None) or compliance.verification_status or "inconclusive"
    if status == "not_assessed":
        return []
    reason = (adherence.reason if adherence else None) or compliance.reason
    score = compliance.compliance_score
    intake = checkin.observation(
        "medication-intake", "Medication intake observed on video", "therapy",
        valueCodeableConcept=_code(VERIFICATION_SYSTEM, status),
        component=[
            _component("face-in-view", "Face in view", "valueBoolean", compliance.face_detected, reason),
            _component("hand-in-view", "Hand in view", "valueBoolean", compliance.hand_detected, reason),
            _component("pill-visible", "Pill visible", "valueBoolean", compliance.pill_detected,
                       "pill detection was not assessed"),
            _component("compliance-score", "Compliance score", "valueQuantity",
                       _fraction(score) if score is not None else None, reason),
        ],
    )
    detector = compliance.pill_detector
    notes = [text for text in (reason, detector.note if detector else None) if text]
    if notes:
        intake["note"] = [{"text": text} for text in notes]
    return [intake]


def risk_observation(checkin: _Checkin, fusion: MultimodalFusion, summary: ClinicalSummary) -> dict[str, Any]:
    level = fusion.risk_level
    flags = [f'Transcript flag: "{flag}"' if isinstance(flag, str) else
             f'Transcript flag ({str(flag.category).replace("_", " ")}, {flag.note}): "{flag.phrase}"'
             + (f" at {flag.start:.1f} s" if flag.start is not None else "")
             for flag in summary.flags or []]
    risk = checkin.observation(
        "risk-level", "Check-in risk level", "survey",
        valueCodeableConcept=_code(RISK_PROBABILITY_SYSTEM, level, level.capitalize()),
        method={"text": f"{fusion.method}: documented rules over the patient's changes from their own "
                        "baseline, medication and transcript flags"},
        component=[
            {"code": _code(RISK_FACTOR_SYSTEM, e.factor),
             "valueCodeableConcept": {**_code(SEVERITY_SYSTEM, e.severity), "text": e.evidence or e.severity}}
            for e in fusion.risk_evidence or []
        ],
        note=[{"text": text} for text in (
            summary.risk_assessment, *flags, summary.emotional_state, summary.medication_adherence,
            summary.change_from_baseline,
            "Recommendations: " + "; ".join(summary.recommendations) if summary.recommendations else None,
            f"Summary generated by {summary.generated_by}",
        ) if text],
    )
    if not risk["component"]:
        risk.pop("component")
    return risk


REVIEW_REASON_SYSTEM = "urn:schizodot:codesystem:dosing-review-reason"
# The verdict -> MedicationAdministration.status. "Cannot tell" is `unknown`: saying `not-done`
# would claim the dose was missed, which the reviewer could not see.
ADMINISTRATION_STATUS = {"taken": "completed", "not_taken": "not-done", "unverifiable": "unknown"}


def medication_administration_bundle(item: ResultItem, patient_identifier_system: str) -> dict[str, Any]:
    """A reviewed check-in's dosing as a FHIR R4 MedicationAdministration, in a `collection` Bundle,
    validated by fhir.resources. Its id is the check-in's, so an amended verdict replaces the earlier.
    The patient is named by the clinic's own id."""
    from fhir.resources.R4B.medicationadministration import MedicationAdministration

    job_id = item.job_id
    review = item.results.compliance.review
    if review is None or review.verdict not in ADMINISTRATION_STATUS:
        raise ValueError(f"check-in {job_id} has no reviewer's verdict to send")
    subject = patient_reference(item.patient, patient_identifier_system)
    resource: dict[str, Any] = {
        "resourceType": "MedicationAdministration",
        "id": _uid(job_id, "medication-administration"),
        "identifier": [{"system": OBSERVATION_ID_SYSTEM, "value": f"{job_id}/medication-administration"}],
        "status": ADMINISTRATION_STATUS[review.verdict],
        "category": _code("http://terminology.hl7.org/CodeSystem/medication-admin-category", "community",
                          "Community"),
        "medicationCodeableConcept": {"text": "the medication taken on camera in the check-in's dosing steps"},
        "subject": subject,
        "effectiveDateTime": item.analyzed_at or item.timestamp,
        "performer": [{"actor": subject}],
        "note": [{"text": f"Observed dosing reviewed on video by {review.by_name or review.by} "
                          f"at {review.at}: {review.verdict.replace('_', ' ')}"
                          + (f" ({review.reason_text})" if review.reason_text else "")
                          + (f". Amends {len(review.history or [])} earlier verdict(s)."
                             if review.history else ".")}],
    }
    if review.note:
        resource["note"].append({"text": f"Reviewer's note: {review.note}"})
    if review.verdict != "taken" and review.reason:
        resource["statusReason"] = [_code(REVIEW_REASON_SYSTEM, review.reason, review.reason_text)]
    MedicationAdministration.model_validate(resource)
    document = {
        "resourceType": "Bundle", "id": _uid(job_id, f"dosing-review-{review.revision}"),
        "identifier": {"system": JOB_ID_SYSTEM, "value": job_id}, "type": "collection",
        "timestamp": review.at or item.timestamp,
        "entry": [{"fullUrl": f"urn:uuid:{resource['id']}", "resource": resource}],
    }
    return json.loads(Bundle.model_validate(document).model_dump_json(exclude_none=True))
