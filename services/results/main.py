"""Results worker: saves each job's SchizodotUsers item, completes the job, and
sweeps jobs that stopped making progress."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import structlog

from services.results.handlers import ResultsWriter, handle_fusion_completed, sweep_stuck_jobs
from services.results.settings import ResultsSettings
from shared.worker import StageContext, run_stage

log = structlog.get_logger()


def build_handler(context: StageContext):
    writer = ResultsWriter(context.aws.dynamodb, context.settings.users_table)
    return functools.partial(handle_fusion_completed, context=context, writer=writer)


async def run_sweeper(context: StageContext, stop: asyncio.Event) -> None:
    settings: ResultsSettings = context.settings  # type: ignore[assignment]
    while not stop.is_set():
        try:
            await sweep_stuck_jobs(context.jobs, settings)
        except Exception:
            log.exception("sweep failed; will try again")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=settings.sweep_interval_seconds)


def main() -> None:
    run_stage(ResultsSettings(), "results", build_handler, side_tasks=(run_sweeper,))


if __name__ == "__main__":
    main()
