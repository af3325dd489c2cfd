"""The results stage's settings (`RESULTS_*`)."""

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from shared.settings import StageSettings

Csv = Annotated[tuple[str, ...], NoDecode]  # comma-separated in the environment


class ResultsSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="RESULTS_", extra="ignore", frozen=True)

    # The sweeper fails jobs that made no progress for this long (a worker
    # that died on every retry, an upload that never came).
    stuck_after_seconds: int = Field(1800, ge=60)
    sweep_interval_seconds: float = Field(60.0, gt=0)

    # The read API (served by the results worker).
    api_host: str = "127.0.0.1"
    api_port: int = Field(8081, ge=0, le=65535)
    # Credentials: API keys (sent as `X-API-Key`) and bearer tokens
    # (`Authorization: Bearer ...`). With none set, every data route answers 401.
    api_keys: Csv = Field((), repr=False)
    api_bearer_tokens: Csv = Field((), repr=False)
    api_max_page_size: int = Field(100, ge=1, le=1000)

    # Results out to the EHR: a CloudEvent with a FHIR R4 bundle per completed
    # job, to an SQS queue and/or an SNS topic. Off when neither is set.
    ehr_queue_url: str | None = None
    ehr_topic_arn: str | None = None
    # Identifier system the EHR knows our patient ids by (FHIR Patient.identifier.system).
    fhir_patient_identifier_system: str = "urn:schizodot:patient-id"

    @field_validator("api_keys", "api_bearer_tokens", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value
