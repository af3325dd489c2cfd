"""The SchizodotUsers item and the job's summary, in the seed's exact shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.domain.job import Job


def _seconds_between(start: str, end: str) -> float:
    parse = lambda value: datetime.fromisoformat(value.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds(), 3)


def build_user_item(job: Job, findings: dict[str, Any]) -> dict[str, Any]:
    """The item for a job from its findings document (fusion's `analysed_at` and `results`)."""
    analysed_at = findings["analysed_at"]
    expected = [m for m in ("audio", "vision") if m not in job.pipeline.skipped]
    return {
        "user_id": job.patient_id,
        "timestamp": analysed_at,
        "job_id": job.job_id,
        "s3_key": job.s3_key,
        "analysis_type": "multimodal" if len(expected) == 2 else f"{expected[0]}_only",
        "analyzed_at": analysed_at,
        "processing_time_seconds": _seconds_between(job.started_at or job.created_at, analysed_at),
        "status": "completed",
        "results": findings["results"],
        # Added to the seed's attributes (issue 12): the clinic the result belongs to. `user_id`
        # is the stored patient key (clinic.patient), so one clinic's history never holds another's.
        **({"clinic_id": job.clinic_id} if job.clinic_id else {}),
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
