from pydantic import Field

from shared.settings import CommonSettings


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class ResultsSettings(CommonSettings):
    service_name: str = "schizodot-results"
    # The sweeper fails jobs that made no progress for this long (a worker
    # that died on every retry, an upload that never came).
    stuck_after_seconds: int = Field(1800, ge=60, validation_alias="RESULTS_STUCK_AFTER_SECONDS")
    sweep_interval_seconds: float = Field(60.0, gt=0, validation_alias="RESULTS_SWEEP_INTERVAL_SECONDS")

    # The read API (served by the results worker).
    api_host: str = Field("127.0.0.1", validation_alias="RESULTS_API_HOST")
    api_port: int = Field(8081, ge=0, le=65535, validation_alias="RESULTS_API_PORT")
    # Comma-separated credentials: API keys (sent as `X-API-Key`) and bearer
    # tokens (`Authorization: Bearer ...`). With none set, every data route answers 401.
    api_keys_csv: str = Field("", repr=False, validation_alias="RESULTS_API_KEYS")
    bearer_tokens_csv: str = Field("", repr=False, validation_alias="RESULTS_API_BEARER_TOKENS")
    max_page_size: int = Field(100, ge=1, le=1000, validation_alias="RESULTS_API_MAX_PAGE_SIZE")

    # Results out to the EHR: a CloudEvent with a FHIR R4 bundle per completed
    # job, to an SQS queue and/or an SNS topic. Off when neither is set.
    ehr_queue_url: str | None = Field(None, validation_alias="RESULTS_EHR_QUEUE_URL")
    ehr_topic_arn: str | None = Field(None, validation_alias="RESULTS_EHR_TOPIC_ARN")
    # Identifier system the EHR knows our patient ids by (FHIR Patient.identifier.system).
    patient_identifier_system: str = Field("urn:schizodot:patient-id",
                                           validation_alias="RESULTS_FHIR_PATIENT_IDENTIFIER_SYSTEM")

    @property
    def api_keys(self) -> tuple[str, ...]:
        return _split(self.api_keys_csv)

    @property
    def bearer_tokens(self) -> tuple[str, ...]:
        return _split(self.bearer_tokens_csv)
