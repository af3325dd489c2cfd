"""The seed-shaped `results` map of a SchizodotUsers item, from the modalities' and fusion's findings."""

from __future__ import annotations

from typing import Any


def _not_assessed(kind: str, reason: str) -> dict[str, Any]:
    if kind == "audio":
        return {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False, "method": None,
                "reason": reason}
    return {"primary_emotion": None, "confidence": None, "all_emotions": [], "face_detected": False,
            "frame_count": 0, "assessed": False, "method": None, "reason": reason}


def _no_video_compliance(reason: str) -> dict[str, Any]:
    """Adherence of a check-in without video: not assessed (nothing could show it), in the seed's shape."""
    return {"pill_detected": None, "hand_detected": None, "face_detected": None, "compliance_score": None,
            "confidence": None, "verification_status": "not_assessed", "assessed": False, "reason": reason}


def _self_report(audio: dict[str, Any] | None, skipped: dict[str, str]) -> dict[str, Any]:
    """What the patient said about the medication (audio's `self_report`): never observed intake,
    so it sits beside the verification status and no rule reads it as verification."""
    report = (audio or {}).get("self_report")
    if report:
        return report
    return {"classification": None, "words": [], "method": None, "window_source": None, "assessed": False,
            "observed": False, "reason": skipped.get("audio", "no audio was analysed")}


def _markers(section: str, fusion_document: dict[str, Any], stage: dict[str, Any] | None) -> dict[str, Any]:
    """A stage's markers with fusion's baseline block on each (the stage's own when fusion had none)."""
    return fusion_document.get(section) or (stage or {}).get(section) or {}


def build_results(
    fusion_document: dict[str, Any],
    audio: dict[str, Any] | None,
    vision: dict[str, Any] | None,
    skipped: dict[str, str],
) -> dict[str, Any]:
    compliance = dict((vision or {}).get("compliance")
                      or _no_video_compliance(skipped.get("vision", "no video was analysed")))
    compliance["self_report"] = _self_report(audio, skipped)
    results = {
        "audio_emotion": (audio or {}).get("audio_emotion")
        or _not_assessed("audio", skipped.get("audio", "no audio was analysed")),
        "facial_emotion": (vision or {}).get("facial_emotion")
        or _not_assessed("vision", skipped.get("vision", "no video was analysed")),
        "compliance": compliance,
        "multimodal_fusion": fusion_document["multimodal_fusion"],
        "clinical_summary": fusion_document["clinical_summary"],
    }
    if audio:
        results["vocal_markers"] = _markers("vocal_markers", fusion_document, audio)
        if audio.get("audio_quality"):  # the next check-ins' quality gate compares the recording device and rate
            results["audio_quality"] = audio["audio_quality"]
        if fusion_document.get("answers") or audio.get("answers"):  # per-question markers, with their baselines
            results["answers"] = fusion_document.get("answers") or audio["answers"]
        if (audio.get("transcript") or {}).get("enabled"):  # opt-in; its flags are in clinical_summary.flags
            results["transcript"] = audio["transcript"]
    if vision:
        results["video_markers"] = _markers("video_markers", fusion_document, vision)
    return results
