"""The results stage's settings (`RESULTS_*`)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import StageSettings


class ResultsSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="RESULTS_", extra="ignore", frozen=True)

    # The sweeper fails jobs that made no progress for this long (a worker
    # that died on every retry, an upload that never came).
    stuck_after_seconds: int = Field(1800, ge=60)
    sweep_interval_seconds: float = Field(60.0, gt=0)

    # The read API (served by the results worker).
    api_host: str = "127.0.0.1"
    api_port: int = Field(8081, ge=0, le=65535)
    # Who may call it: shared.auth (SCHIZODOT_AUTH_* for people's tokens; API keys in
    # SchizodotApiKeys, managed through the API by clinic admins).
    api_max_page_size: int = Field(100, ge=1, le=1000)
    # DELETE /api/v1/patients/{id} waits this long for the erasure's receipt, then answers 202.
    erasure_wait_seconds: float = Field(20.0, ge=0, le=120)
    # The late sweep for what a stage stopped mid-work may still write (at most SQS's 900 s delay).
    erasure_sweep_delay_seconds: int = Field(900, ge=0, le=900)

    # Results out to the EHR: a CloudEvent with a FHIR R4 bundle per completed
    # job, to an SQS queue and/or an SNS topic. Off when neither is set.
    ehr_queue_url: str | None = None
    ehr_topic_arn: str | None = None
    # Identifier system the EHR knows our patient ids by (FHIR Patient.identifier.system).
    fhir_patient_identifier_system: str = "urn:schizodot:patient-id"
