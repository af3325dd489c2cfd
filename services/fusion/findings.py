"""The seed-shaped `results` map of a SchizodotUsers item, from the modalities' and fusion's findings."""

from __future__ import annotations

from typing import Any


def _not_assessed(kind: str, reason: str) -> dict[str, Any]:
    if kind == "audio":
        return {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False, "reason": reason}
    return {"primary_emotion": None, "confidence": None, "all_emotions": [], "face_detected": False,
            "frame_count": 0, "assessed": False, "reason": reason}


def build_results(
    fusion_document: dict[str, Any],
    audio: dict[str, Any] | None,
    vision: dict[str, Any] | None,
    skipped: dict[str, str],
) -> dict[str, Any]:
    compliance = (vision or {}).get("compliance") or {
        "pill_detected": None, "hand_detected": None, "face_detected": None, "compliance_score": None,
        "confidence": None, "verification_status": "inconclusive",
        "reason": skipped.get("vision", "no video was analysed"),
    }
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
        results["vocal_markers"] = audio.get("vocal_markers", {})
        if (audio.get("transcript") or {}).get("enabled"):  # opt-in; kept for a future summary
            results["transcript"] = audio["transcript"]
    return results
