"""The job store, counted for `/metrics`: every stage process wraps its job store in `MeteredJobs`."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from shared.aws.jobs import FailureReason, JobStore, StageRun
from shared.runtime.metrics import JOB_DURATION, JOBS_COMPLETED, JOBS_FAILED


class MeteredJobs:
    """A job store that counts the jobs it completes and fails for `/metrics`; every other call passes through."""

    def __init__(self, jobs: JobStore) -> None:
        self._jobs = jobs

    def __getattr__(self, name: str) -> Any:
        return getattr(self._jobs, name)

    async def complete(self, run: StageRun, summary: dict[str, Any], message: str) -> bool:
        completed = await self._jobs.complete(run, summary, message)
        if completed:
            JOBS_COMPLETED.add(1)
            created = _parse_time(run.job.created_at if run.job else None)
            if created is not None:
                JOB_DURATION.record(max(time.time() - created, 0.0))
        return completed

    async def fail(self, job_id: str, error: str, stage: str | None = None, *, reason: FailureReason = "other") -> bool:
        failed = await self._jobs.fail(job_id, error, stage, reason=reason)
        if failed:
            JOBS_FAILED.add(1, {"stage": stage or "unknown", "reason": reason})
        return failed


def _parse_time(value: Any) -> float | None:
    try:
        return datetime.strptime(str(value), "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()
    except ValueError:
        return None
