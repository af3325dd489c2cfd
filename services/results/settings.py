from pydantic import Field

from shared.settings import CommonSettings


class ResultsSettings(CommonSettings):
    service_name: str = "schizodot-results"
    # The sweeper fails jobs that made no progress for this long (a worker
    # that died on every retry, an upload that never came).
    stuck_after_seconds: int = Field(1800, ge=60, validation_alias="RESULTS_STUCK_AFTER_SECONDS")
    sweep_interval_seconds: float = Field(60.0, gt=0, validation_alias="RESULTS_SWEEP_INTERVAL_SECONDS")
