"""The seed-shaped `results` map of a SchizodotUsers item, from the modalities' and fusion's findings."""

from __future__ import annotations

from typing import Any

from shared.domain.findings import AudioFindings, Document, Markers, VisionFindings


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


def _self_report(audio: AudioFindings | None, skipped: dict[str, str]) -> dict[str, Any]:
    """What the patient said about the medication (audio's `self_report`): never observed intake,
    so it sits beside the verification status and no rule reads it as verification."""
    report = _given(audio.self_report if audio else None)
    if report:
        return report
    return {"classification": None, "words": [], "method": None, "window_source": None, "assessed": False,
            "observed": False, "reason": skipped.get("audio", "no audio was analysed")}


def _markers(section: str, fusion_document: dict[str, Any], stage_markers: Markers | None) -> Markers:
    """A stage's markers with fusion's baseline block on each (the stage's own when fusion had none)."""
    return fusion_document.get(section) or stage_markers or {}


def _given(block: Document | None) -> dict[str, Any] | None:
    """A block as stored, None when absent or empty (an empty block reads as none, as it always has)."""
    stored = block.stored() if block is not None else None
    return stored or None


def build_results(
    fusion_document: dict[str, Any],
    audio: AudioFindings | None,
    vision: VisionFindings | None,
    skipped: dict[str, str],
) -> dict[str, Any]:
    """The item's `results` map, as stored: fusion's blocks, then what the stages found."""
    compliance = dict(_given(vision.compliance if vision else None)
                      or _no_video_compliance(skipped.get("vision", "no video was analysed")))
    compliance["self_report"] = _self_report(audio, skipped)
    results = {
        "audio_emotion": _given(audio.audio_emotion if audio else None)
        or _not_assessed("audio", skipped.get("audio", "no audio was analysed")),
        "facial_emotion": _given(vision.facial_emotion if vision else None)
        or _not_assessed("vision", skipped.get("vision", "no video was analysed")),
        "compliance": compliance,
        "multimodal_fusion": fusion_document["multimodal_fusion"],
        "clinical_summary": fusion_document["clinical_summary"],
    }
    if audio:
        results["vocal_markers"] = _markers("vocal_markers", fusion_document, audio.vocal_markers)
        if quality := _given(audio.audio_quality):  # the next check-ins' quality gate compares device and rate
            results["audio_quality"] = quality
        if answers := fusion_document.get("answers") or _given(audio.answers):  # per-question markers, with baselines
            results["answers"] = answers
        if audio.transcript and audio.transcript.enabled:  # opt-in; its flags are in clinical_summary.flags
            results["transcript"] = audio.transcript.stored()
    if vision:
        results["video_markers"] = _markers("video_markers", fusion_document, vision.video_markers)
    return results
