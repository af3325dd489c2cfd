"""The SchizodotUsers item and the job's summary, in the seed's exact shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any


def _seconds_between(start: str, end: str) -> float:
    parse = lambda value: datetime.fromisoformat(value.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds(), 3)


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


def _markers(section: str, fusion_document: dict[str, Any], stage: dict[str, Any] | None) -> dict[str, Any]:
    """A stage's markers with fusion's baseline block on each (the stage's own when fusion had none)."""
    return fusion_document.get(section) or (stage or {}).get(section) or {}


def build_user_item(
    job: dict[str, Any],
    fusion_document: dict[str, Any],
    audio: dict[str, Any] | None,
    vision: dict[str, Any] | None,
    skipped: dict[str, str],
) -> dict[str, Any]:
    analysed_at = fusion_document["analysed_at"]
    compliance = (vision or {}).get("compliance") or _no_video_compliance(skipped.get("vision", "no video was analysed"))
    expected = [m for m in ("audio", "vision") if m not in skipped]
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
        if (audio.get("transcript") or {}).get("enabled"):  # opt-in; its flags are in clinical_summary.flags
            results["transcript"] = audio["transcript"]
    if vision:
        results["video_markers"] = _markers("video_markers", fusion_document, vision)
    return {
        "user_id": job["patient_id"],
        "timestamp": analysed_at,
        "job_id": job["job_id"],
        "s3_key": job["s3_key"],
        "analysis_type": "multimodal" if len(expected) == 2 else f"{expected[0]}_only",
        "analyzed_at": analysed_at,
        "processing_time_seconds": _seconds_between(job.get("started_at") or job["created_at"], analysed_at),
        "status": "completed",
        "results": results,
    }


def job_summary(item: dict[str, Any]) -> dict[str, Any]:
    """The job's short `results` map (schema: emotion_summary, compliance_score, risk_level)."""
    results = item["results"]
    return {
        "emotion_summary": results["multimodal_fusion"]["overall_emotion"],
        "compliance_score": results["compliance"].get("compliance_score"),
        "risk_level": results["multimodal_fusion"]["risk_level"],
        "verification_status": results["compliance"].get("verification_status"),
    }
