"""Rule-based fusion of the audio and vision findings, and the clinical summary.

Every rule is written out here with its threshold from `FusionSettings`, so a
clinician can read why a check-in got its risk level:

1. Emotion labels of face and voice are put in one vocabulary (fear -> anxious,
   surprise -> surprised, disgust -> disgusted) and combined by
   weight x modality confidence; the top label is the overall emotion.
2. Face and voice are consistent when their primary emotions fall in the same
   valence group (positive / neutral / negative).
3. Risk factors, each with a severity:
   - medication intake seen as not taken: high;
   - medication intake could not be verified (inconclusive, or no video): moderate;
   - overall emotion negative with confidence >= negative_affect_confidence: moderate;
   - flat affect: facial expressivity (blendshape activity) < flat_affect_max_activity: moderate;
   - reduced speech: pause ratio >= reduced_speech_pause_ratio, or speech fills
     less than min_speech_share of the recording: moderate; no speech at all: moderate;
   - monotone voice: pitch variability < monotone_max_f0_variability semitones: low;
   - face and voice inconsistent: low;
   - face not visible: moderate;
   - changes from the patient's own baseline (services/fusion/baseline.py).
   Risk level: high if any high factor or three or more moderate ones;
   moderate if any moderate; otherwise low.
4. Each expected modality that could not be assessed multiplies the fused
   confidence by missing_modality_penalty and is named in the summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.fusion.settings import FusionSettings

CANONICAL = {"fear": "anxious", "surprise": "surprised", "disgust": "disgusted", "sadness": "sad", "anger": "angry"}
VALENCE = {
    "happy": "positive", "surprised": "positive",
    "neutral": "neutral", "calm": "neutral",
    "sad": "negative", "angry": "negative", "anxious": "negative", "disgusted": "negative",
}
_SEVERITY_ORDER = {"low": 0, "moderate": 1, "high": 2}


@dataclass(frozen=True)
class RiskFactor:
    factor: str
    severity: str
    evidence: str

    def to_dict(self) -> dict[str, str]:
        return {"factor": self.factor, "severity": self.severity, "evidence": self.evidence}


def canonical(label: str | None) -> str | None:
    return CANONICAL.get(label, label) if label else None


def _distribution(emotion: dict[str, Any] | None) -> dict[str, float]:
    if not emotion or not emotion.get("all_emotions"):
        return {}
    return {canonical(e["emotion"]): float(e["confidence"]) for e in emotion["all_emotions"]}


def fuse(
    audio: dict[str, Any] | None,
    vision: dict[str, Any] | None,
    expected: list[str],
    skipped: dict[str, str],
    settings: FusionSettings,
    baseline: tuple[dict[str, Any], list[RiskFactor]] | None = None,
) -> dict[str, Any]:
    """`multimodal_fusion` in the seed's shape, plus the evidence behind it.

    `baseline` is the report and risk factors of `baseline.compare`, when the
    patient's history was read.
    """
    audio_emotion = (audio or {}).get("audio_emotion")
    facial_emotion = (vision or {}).get("facial_emotion")
    compliance = (vision or {}).get("compliance")
    voice = _distribution(audio_emotion if audio_emotion and audio_emotion.get("assessed", True) else None)
    face = _distribution(facial_emotion if facial_emotion and facial_emotion.get("face_detected") else None)

    weights = {
        "face": settings.face_weight * float((facial_emotion or {}).get("confidence") or 0) if face else 0.0,
        "voice": settings.voice_weight * float((audio_emotion or {}).get("confidence") or 0) if voice else 0.0,
    }
    combined: dict[str, float] = {}
    for source, distribution in (("face", face), ("voice", voice)):
        for label, score in distribution.items():
            combined[label] = combined.get(label, 0.0) + weights[source] * score
    total = sum(combined.values())
    not_assessed = [m for m in ("audio", "vision") if m not in expected] + [
        m for m, present in (("audio", voice), ("vision", face)) if m in expected and not present
    ]
    if total > 0:
        overall, score = max(combined.items(), key=lambda item: item[1])
        # How much of the combined evidence backs the top label, lowered per missing modality.
        confidence = min(1.0, score / total) * settings.missing_modality_penalty ** len(set(not_assessed))
    else:
        overall, confidence = None, 0.0

    face_label = canonical((facial_emotion or {}).get("primary_emotion")) if face else None
    voice_label = canonical((audio_emotion or {}).get("primary_emotion")) if voice else None
    if face_label and voice_label:
        consistency = "consistent" if VALENCE.get(face_label) == VALENCE.get(voice_label) else "inconsistent"
    elif face_label or voice_label:
        consistency = "single_modality"
    else:
        consistency = "not_assessed"

    factors = _risk_factors(audio, vision, compliance, overall, confidence, consistency, face_label, voice_label,
                            expected, settings)
    if baseline is not None:
        factors += baseline[1]
    level = _risk_level(factors)
    return {
        "emotional_consistency": consistency,
        "overall_emotion": overall,
        "confidence": round(confidence, 3),
        "risk_level": level,
        "risk_factors": [f.factor for f in factors],
        "risk_evidence": [f.to_dict() for f in factors],
        "modalities_assessed": sorted({"audio", "vision"} - set(not_assessed)),
        "modalities_not_assessed": {
            m: skipped.get(m) or _why_not_assessed(m, audio, vision) for m in sorted(set(not_assessed))
        },
        "face_emotion": face_label,
        "voice_emotion": voice_label,
        "baseline": baseline[0] if baseline is not None else None,
        "method": "rule_based_v2",
    }


def _why_not_assessed(modality: str, audio: dict | None, vision: dict | None) -> str:
    if modality == "audio":
        return ((audio or {}).get("audio_emotion") or {}).get("reason") or "no speech emotion available"
    return ((vision or {}).get("facial_emotion") or {}).get("reason") or "no face was visible"


def _marker(audio: dict | None, name: str) -> float | None:
    value = ((audio or {}).get("vocal_markers") or {}).get(name)
    return value.get("value") if isinstance(value, dict) else value


def _risk_factors(
    audio: dict | None, vision: dict | None, compliance: dict | None, overall: str | None, confidence: float,
    consistency: str, face_label: str | None, voice_label: str | None, expected: list[str],
    settings: FusionSettings,
) -> list[RiskFactor]:
    factors: list[RiskFactor] = []
    status = (compliance or {}).get("verification_status")
    if status == "non_compliant":
        factors.append(RiskFactor("medication_not_taken", "high", (compliance or {}).get("reason", "")))
    elif "vision" in expected and status in ("inconclusive", None):
        factors.append(RiskFactor(
            "medication_intake_unverified", "moderate",
            (compliance or {}).get("reason") or "the video could not show the medication being taken",
        ))
    elif "vision" not in expected:
        factors.append(RiskFactor("medication_intake_unverified", "moderate", "the check-in has no video"))
    if overall and VALENCE.get(overall) == "negative" and confidence >= settings.negative_affect_confidence:
        factors.append(RiskFactor("negative_affect", "moderate", f"overall emotion {overall} ({confidence:.2f})"))
    expressivity = ((vision or {}).get("facial_emotion") or {}).get("expressivity") or {}
    activity = expressivity.get("blendshape_activity")
    if activity is not None and activity < settings.flat_affect_max_activity:
        factors.append(RiskFactor(
            "flat_affect", "moderate",
            f"little change in facial expression (activity {activity:.3f} < {settings.flat_affect_max_activity})",
        ))
    if "audio" in expected and audio is not None:
        pause_ratio = _marker(audio, "pause_ratio")
        speech_seconds = _marker(audio, "speech_seconds")
        duration = audio.get("duration_seconds")
        share = speech_seconds / duration if speech_seconds is not None and duration else None
        f0_variability = _marker(audio, "f0_variability")
        if audio.get("speech_detected") is False:
            factors.append(RiskFactor("no_speech", "moderate", "no speech was detected in the recording"))
        elif pause_ratio is not None and pause_ratio >= settings.reduced_speech_pause_ratio:
            factors.append(RiskFactor("reduced_speech", "moderate", f"pauses take {pause_ratio:.0%} of the speaking time"))
        elif share is not None and share < settings.min_speech_share:
            factors.append(RiskFactor(
                "reduced_speech", "moderate", f"speech fills {share:.0%} of the {duration:.0f} s recording"))
        if f0_variability is not None and f0_variability < settings.monotone_max_f0_variability:
            factors.append(RiskFactor(
                "monotone_voice", "low",
                f"pitch varies by {f0_variability:.2f} semitones (< {settings.monotone_max_f0_variability})",
            ))
    if consistency == "inconsistent":
        factors.append(RiskFactor("face_voice_inconsistent", "low", f"face shows {face_label}, voice sounds {voice_label}"))
    if "vision" in expected and not ((vision or {}).get("facial_emotion") or {}).get("face_detected"):
        factors.append(RiskFactor("face_not_visible", "moderate", "the patient's face was not visible"))
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


def clinical_summary(fusion: dict[str, Any], compliance: dict[str, Any] | None, timestamp: str) -> dict[str, Any]:
    """The seed's rule-based `clinical_summary`, written from the fusion result."""
    overall = fusion["overall_emotion"]
    state = f"Patient {_STATE_WORDS.get(overall, 'shows ' + str(overall))}" if overall else "Emotional state could not be assessed"
    if fusion["emotional_consistency"] == "inconsistent":
        state += f" (face shows {fusion['face_emotion']}, voice sounds {fusion['voice_emotion']})"
    missing = fusion["modalities_not_assessed"]
    if missing:
        state += "; not assessed: " + "; ".join(f"{m} ({why})" for m, why in missing.items())

    status = (compliance or {}).get("verification_status")
    if status == "compliant":
        adherence = "Compliant - medication intake observed"
    elif status == "non_compliant":
        adherence = "Non-compliant - medication was not taken on camera"
    else:
        reason = (compliance or {}).get("reason") or "no video of the intake"
        adherence = f"Not verified - {reason}"

    level = fusion["risk_level"]
    factors = fusion["risk_factors"]
    risk = f"{level.capitalize()} risk - " + (
        "no concerning indicators" if not factors else ", ".join(f.replace("_", " ") for f in factors)
    )
    recommendations = []
    if level == "high":
        recommendations.append("Contact the patient within 24 hours")
    if "medication_not_taken" in factors or "medication_intake_unverified" in factors:
        recommendations.append("Confirm medication adherence with the patient")
    if {"negative_affect", "flat_affect", "reduced_speech", "no_speech", "monotone_voice"} & set(factors):
        recommendations.append("Review mood and negative symptoms at the next contact")
    if any(f.endswith("_baseline") for f in factors) or "repeated_missed_medication" in factors:
        recommendations.append("Discuss the change from the patient's usual check-ins with them")
    if missing:
        recommendations.append("Ask the patient to record the next check-in with face and voice clearly captured")
    if level == "low":
        recommendations += ["Continue current treatment plan", "Schedule routine follow-up"]
    return {
        "emotional_state": state,
        "medication_adherence": adherence,
        "risk_assessment": risk,
        "recommendations": recommendations,
        "change_from_baseline": _baseline_sentence(fusion.get("baseline")),
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
