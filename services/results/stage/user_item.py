"""The SchizodotUsers item and the job's summary, in the seed's exact shape."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from shared.domain.findings import FusionDocument, ResultItem
from shared.domain.job import Job


def _seconds_between(start: str, end: str) -> float:
    parse = lambda value: datetime.fromisoformat(value.replace("Z", "+00:00"))  # noqa: E731
    return round((parse(end) - parse(start)).total_seconds(), 3)


def build_user_item(job: Job, findings: FusionDocument) -> ResultItem:
    """The item for a job from fusion's findings document (its `analysed_at` and `results`).

    The clinic is not written beside the key: `user_id` is the stored patient key (clinic.patient),
    which is where the item's clinic is kept (`ResultItem.clinic_id`)."""
    analysed_at = findings.analysed_at
    expected = [m for m in ("audio", "vision") if m not in job.pipeline.skipped]
    return ResultItem(
        user_id=job.patient_id,
        timestamp=analysed_at,
        job_id=job.job_id,
        s3_key=job.s3_key,
        analysis_type="multimodal" if len(expected) == 2 else f"{expected[0]}_only",
        analyzed_at=analysed_at,
        processing_time_seconds=_seconds_between(job.started_at or job.created_at, analysed_at),
        status="completed",
        results=findings.results,
    )


def job_summary(item: ResultItem) -> dict[str, Any]:
    """The job's short `results` map (schema: emotion_summary, compliance_score, risk_level)."""
    results = item.results
    return {
        "emotion_summary": results.multimodal_fusion.overall_emotion,
        "compliance_score": results.compliance.compliance_score,
        "risk_level": results.multimodal_fusion.risk_level,
        "verification_status": results.compliance.verification_status,
    }
