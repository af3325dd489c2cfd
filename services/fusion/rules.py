"""Rule-based fusion of the audio and vision findings, and the clinical summary.

Every rule is written out here with its threshold from `FusionSettings`, so a
clinician can read why a check-in got its risk level. Risk moves only with the
patient's own evidence, never with a fact about the deployment.

1. **Emotion.** A side (face, voice) counts only when it was assessed by a method
   with measured validity: `assessed` and a `validation` block (the model's
   measured accuracy; the default speech emotion abstains, see
   services/audio/emotion.py). Labels are put in one vocabulary (fear -> anxious,
   surprise -> surprised, disgust -> disgusted), combined by weight x confidence;
   the top label is `overall_emotion`, and `overall_emotion_basis` names the sides
   it rests on. Each side left out multiplies the confidence by
   `missing_modality_penalty`. Face and voice are compared (consistent when their
   labels share a valence group) only when both count. Emotion labels are not
   validated markers in schizophrenia: they are context, never risk evidence.
2. **Risk factors**, each with a severity and its evidence:
   - notable changes from the patient's own baseline on the side of worsening
     (services/fusion/baseline.py): the main evidence;
   - statements flagged in the transcript (services/fusion/transcript_flags.py): high;
   - medication seen not taken: high; a run of it (baseline.py): high;
   - intake inconclusive while a pill detector is configured: moderate. With no
     detector configured, adherence is "not assessed" and raises nothing;
   - no speech at all in a recording with sound, or no face in a recording with
     video: moderate (the patient did not take part in that half of the check-in);
   - face and voice inconsistent: low.
   Risk level: high if any high factor or three or more moderate ones;
   moderate if any moderate; otherwise low. A first check-in (no baseline) with
   nothing else is low.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.fusion import transcript_flags
from services.fusion.settings import FusionSettings
from shared.domain.findings import AudioFindings, Compliance, Emotion, VisionFindings

CANONICAL = {"fear": "anxious", "surprise": "surprised", "disgust": "disgusted", "sadness": "sad", "anger": "angry"}
VALENCE = {
    "happy": "positive", "surprised": "positive",
    "neutral": "neutral", "calm": "neutral",
    "sad": "negative", "angry": "negative", "anxious": "negative", "disgusted": "negative",
}
NO_DETECTOR = "no pill detector is configured in this deployment"
SIDES = {"face": "vision", "voice": "audio"}  # emotion side -> modality


@dataclass(frozen=True)
class RiskFactor:
    factor: str
    severity: str
    evidence: str

    def to_dict(self) -> dict[str, str]:
        return {"factor": self.factor, "severity": self.severity, "evidence": self.evidence}


def canonical(label: str | None) -> str | None:
    return CANONICAL.get(label, label) if label else None


def validated(emotion: Emotion | None) -> bool:
    """Assessed by a method whose accuracy was measured (it carries its `validation`)."""
    return bool(emotion and emotion.assessed is True and emotion.primary_emotion and emotion.validation)


def _why_not_used(emotion: Emotion | None, missing: str) -> str:
    if not emotion:
        return missing
    if emotion.assessed is not True or not emotion.primary_emotion:
        return emotion.reason or "not assessed"
    return emotion.note or "its method has no measured accuracy"


def _distribution(emotion: Emotion) -> dict[str, float]:
    out: dict[str, float] = {}
    for entry in emotion.all_emotions or []:
        label = canonical(entry.emotion)
        out[label] = out.get(label, 0.0) + float(entry.confidence)
    return out


def adherence(compliance: Compliance | None, has_video: bool) -> tuple[str, str | None]:
    """(status, reason): the seed's verification status, `not_assessed` when nothing could assess it."""
    if not has_video or not compliance:
        return "not_assessed", "the check-in has no video"
    detector = compliance.pill_detector
    status = compliance.verification_status or "inconclusive"
    if status == "not_assessed" or (detector is not None and detector.configured is False):
        return "not_assessed", compliance.reason or NO_DETECTOR
    return status, compliance.reason


def fuse(
    audio: AudioFindings | None,
    vision: VisionFindings | None,
    expected: list[str],
    skipped: dict[str, str],
    settings: FusionSettings,
    baseline: tuple[dict[str, Any], list[RiskFactor]] | None = None,
) -> dict[str, Any]:
    """`multimodal_fusion` in the seed's shape, plus the evidence behind it.

    `baseline` is the report and risk factors of `baseline.compare`, when the
    patient's history was read.
    """
    emotions = {"face": vision.facial_emotion if vision else None, "voice": audio.audio_emotion if audio else None}
    used = {side: e for side, e in emotions.items() if validated(e)}
    not_used = {side: _why_not_used(emotions[side], skipped.get(SIDES[side]) or f"no {SIDES[side]} was analysed")
                for side in emotions if side not in used}
    weights = {"face": settings.face_weight, "voice": settings.voice_weight}
    combined: dict[str, float] = {}
    for side, emotion in used.items():
        for label, score in _distribution(emotion).items():
            combined[label] = combined.get(label, 0.0) + weights[side] * float(emotion.confidence or 0) * score
    total = sum(combined.values())
    if total > 0:
        overall, score = max(combined.items(), key=lambda item: item[1])
        confidence = min(1.0, score / total) * settings.missing_modality_penalty ** len(not_used)
    else:
        overall, confidence = None, 0.0
    labels = {side: canonical(e.primary_emotion) for side, e in used.items() if e is not None}
    if len(labels) == 2:
        consistency = "consistent" if VALENCE.get(labels["face"]) == VALENCE.get(labels["voice"]) else "inconsistent"
    else:
        consistency = "single_modality" if labels else "not_assessed"

    missing = _modalities_not_assessed(audio, vision, expected, skipped)
    status, adherence_reason = adherence(vision.compliance if vision else None, "vision" in expected and vision is not None)
    flags, screen = transcript_flags.screen(audio.transcript.stored() if audio and audio.transcript else None)
    factors = _risk_factors(audio, vision, expected, status, adherence_reason, consistency, labels, flags)
    if baseline is not None:
        factors += baseline[1]
    return {
        "emotional_consistency": consistency,
        "overall_emotion": overall,
        "overall_emotion_basis": sorted(used),
        "confidence": round(confidence, 3),
        "risk_level": _risk_level(factors),
        "risk_factors": [f.factor for f in factors],
        "risk_evidence": [f.to_dict() for f in factors],
        "modalities_assessed": sorted({"audio", "vision"} - set(missing)),
        "modalities_not_assessed": missing,
        "emotion_not_used": not_used,
        "face_emotion": labels.get("face"),
        "voice_emotion": labels.get("voice"),
        "adherence": {"status": status, "assessed": status != "not_assessed", "reason": adherence_reason},
        "transcript_flags": flags,
        "transcript_screen": screen,
        "baseline": baseline[0] if baseline is not None else None,
        "method": "rule_based_v3",
    }


def _face_seen(vision: VisionFindings) -> bool:
    return bool(vision.facial_emotion and vision.facial_emotion.face_detected)


def _modalities_not_assessed(audio: AudioFindings | None, vision: VisionFindings | None, expected: list[str],
                             skipped: dict[str, str]) -> dict[str, str]:
    """Modalities that told nothing about the patient: skipped, no speech, or no face."""
    missing = {}
    for modality, document in (("audio", audio), ("vision", vision)):
        if modality not in expected or document is None:
            missing[modality] = skipped.get(modality) or f"no {modality} was analysed"
        elif isinstance(document, AudioFindings) and document.speech_detected is False:
            duration = document.duration_seconds
            missing[modality] = (f"no speech detected in {duration:.1f} s of audio" if duration is not None
                                 else "no speech detected")
        elif isinstance(document, VisionFindings) and not _face_seen(document):
            face = document.facial_emotion
            missing[modality] = (face.reason if face else None) or "no face was visible"
    return missing


def _risk_factors(audio: AudioFindings | None, vision: VisionFindings | None, expected: list[str], status: str,
                  adherence_reason: str | None, consistency: str, labels: dict[str, str | None],
                  flags: list[dict[str, Any]]) -> list[RiskFactor]:
    factors: list[RiskFactor] = []
    for category in dict.fromkeys(flag["category"] for flag in flags):
        quoted = "; ".join(f'"{f["phrase"]}"' + (f" at {f['start']:.1f} s" if f.get("start") is not None else "")
                           for f in flags if f["category"] == category)
        factors.append(RiskFactor(
            f"transcript_{category}", "high",
            f"the patient said {quoted} ({transcript_flags.CATEGORY_WORDS[category]}; {transcript_flags.NOTE})"))
    if status == "non_compliant":
        factors.append(RiskFactor("medication_not_taken", "high", adherence_reason or "the medication was not taken"))
    elif status == "inconclusive":
        factors.append(RiskFactor("medication_intake_unverified", "moderate",
                                  adherence_reason or "the video could not show the medication being taken"))
    if "audio" in expected and audio is not None and audio.speech_detected is False:
        factors.append(RiskFactor("no_speech", "moderate", "no speech was detected in the recording"))
    if "vision" in expected and vision is not None and not _face_seen(vision):
        factors.append(RiskFactor("face_not_visible", "moderate", "the patient's face was not visible"))
    if consistency == "inconsistent":
        factors.append(RiskFactor("face_voice_inconsistent", "low",
                                  f"face shows {labels['face']}, voice sounds {labels['voice']}"))
    return factors


def _risk_level(factors: list[RiskFactor]) -> str:
    severities = [f.severity for f in factors]
    if "high" in severities or severities.count("moderate") >= 3:
        return "high"
    if "moderate" in severities:
        return "moderate"
    return "low"


_STATE_WORDS = {
    "happy": "appears in good spirits", "neutral": "appears calm and even", "calm": "appears calm and stable",
    "sad": "appears low in mood", "angry": "appears irritable or angry", "anxious": "appears anxious or fearful",
    "surprised": "appears surprised or alert", "disgusted": "shows signs of disgust or aversion",
}
_SIDE_WORDS = {"face": "facial expression", "voice": "speech emotion"}


def clinical_summary(fusion: dict[str, Any], compliance: dict[str, Any] | None, timestamp: str) -> dict[str, Any]:
    """The seed's rule-based `clinical_summary`, written from the fusion result.

    `compliance` is the vision stage's (kept in the signature for the call site;
    the adherence status comes from `fusion["adherence"]`)."""
    overall = fusion["overall_emotion"]
    basis = " and ".join(_SIDE_WORDS[s] for s in fusion.get("overall_emotion_basis") or [])
    state = (f"Patient {_STATE_WORDS.get(overall, 'shows ' + str(overall))} (from the {basis})" if overall
             else "Emotional state could not be assessed")
    if fusion["emotional_consistency"] == "inconsistent":
        state += f" (face shows {fusion['face_emotion']}, voice sounds {fusion['voice_emotion']})"
    missing = dict(fusion["modalities_not_assessed"])
    for side, why in (fusion.get("emotion_not_used") or {}).items():
        if SIDES[side] not in missing:
            missing[_SIDE_WORDS[side]] = why
    if missing:
        state += "; not assessed: " + "; ".join(f"{m} ({why})" for m, why in missing.items())

    status = fusion["adherence"]["status"]
    reason = fusion["adherence"]["reason"]
    adherence_text = {
        "compliant": "Compliant - medication intake observed",
        "non_compliant": "Non-compliant - medication was not taken on camera",
        "not_assessed": f"Not assessed - {reason}",
    }.get(status, f"Not verified - {reason or 'the video could not show the medication being taken'}")

    level = fusion["risk_level"]
    factors = fusion["risk_factors"]
    risk = f"{level.capitalize()} risk - " + (
        "no concerning indicators" if not factors else ", ".join(f.replace("_", " ") for f in factors)
    )
    flags = fusion.get("transcript_flags") or []
    recommendations = []
    if flags:
        recommendations.append(f"Review the flagged statements in the transcript ({transcript_flags.NOTE})")
    if level == "high":
        recommendations.append("Contact the patient within 24 hours")
    if {"medication_not_taken", "medication_intake_unverified", "repeated_missed_medication"} & set(factors):
        recommendations.append("Confirm medication adherence with the patient")
    if any(f.endswith("_baseline") for f in factors):
        recommendations.append("Discuss the change from the patient's usual check-ins with them and review "
                               "negative symptoms")
    if fusion["modalities_not_assessed"]:
        recommendations.append("Ask the patient to record the next check-in with face and voice clearly captured")
    if level == "low":
        recommendations += ["Continue current treatment plan", "Schedule routine follow-up"]
    return {
        "emotional_state": state,
        "medication_adherence": adherence_text,
        "risk_assessment": risk,
        "recommendations": recommendations,
        "change_from_baseline": _baseline_sentence(fusion.get("baseline")),
        "flags": flags,
        "transcript_screen": fusion.get("transcript_screen"),
        "generated_by": "rule_based",
        "timestamp": timestamp,
    }


def _baseline_sentence(report: dict[str, Any] | None) -> str:
    if not report:
        return "Change from baseline was not assessed"
    if not report["available"]:
        return "First check-in: no baseline yet to compare with"
    n = report["checkins_compared"]
    if not report["changes"]:
        return f"No notable change from the patient's last {n} check-in(s)"
    return f"Compared with the patient's last {n} check-in(s): " + "; ".join(report["changes"])
