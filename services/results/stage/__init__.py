"""The results stage: the SQS handler that writes each job's SchizodotUsers item (the one writer of that
table), sends it to the EHR, raises the clinic's alerts and completes the job; and the sweeper of jobs that
stopped making progress. Entry point: `RESULTS` with `ResultsDeps` (handlers.py)."""

from services.results.stage.handlers import RESULTS, ResultsDeps, sweep_stuck_jobs
from services.results.stage.writer import ResultsStore, ResultsWriter

__all__ = ["RESULTS", "ResultsDeps", "ResultsStore", "ResultsWriter", "sweep_stuck_jobs"]
