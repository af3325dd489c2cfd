"""The results stage's settings (`RESULTS_*`)."""

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from shared.identity.tokens import AuthSettings
from shared.settings import StageSettings


class ResultsSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="RESULTS_", extra="ignore", frozen=True)

    # The sweeper fails jobs that made no progress for this long (a worker
    # that died on every retry, an upload that never came).
    stuck_after_seconds: int = Field(1800, ge=60)
    sweep_interval_seconds: float = Field(60.0, gt=0)

    # Who people are (SCHIZODOT_AUTH_*, shared.identity.auth): the OIDC issuer, and the console's session cookie.
    auth: AuthSettings = Field(default_factory=AuthSettings)

    # The read API (served by the results worker).
    api_host: str = "127.0.0.1"
    api_port: int = Field(8081, ge=0, le=65535)
    # Who may call it: shared.identity.auth (SCHIZODOT_AUTH_* for people's tokens; API keys in
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

    # The clinician console (served at /console by the results API). Who may sign in with a
    # cookie: SCHIZODOT_AUTH_SESSION_COOKIE and SCHIZODOT_AUTH_COOKIE_PATHS=/console (shared.identity.auth).
    console_enabled: bool = True
    # The key of the console's CSRF tokens (HMAC of the session), its own secret, the same for every
    # results replica; required when browsers sign in with the cookie (e.g. `openssl rand -hex 32`).
    console_csrf_key: str | None = Field(None, repr=False)
    # The console's public address, for the links in alerts sent to webhooks (e.g.
    # https://results.clinic.example/console); unset: alerts carry no link.
    console_url: str | None = None
    # The console's server-side sessions (services/results/console/sessions.py): automatic
    # logoff after this long without a request, and the absolute end however active.
    console_idle_timeout_seconds: int = Field(900, ge=1, le=86400)
    console_session_lifetime_seconds: int = Field(43200, ge=60, le=7 * 86400)
    console_history_limit: int = Field(100, ge=1, le=1000)  # check-ins drawn on a patient's page
    media_url_seconds: int = Field(120, ge=10, le=3600)  # lifetime of the presigned GETs of video and frames
    # The S3 endpoint browsers fetch media from, when it differs from the one this service
    # reaches (compose: http://localhost:4566 against http://moto:4566). Unset: the same.
    public_s3_endpoint_url: str | None = None

    # Alerts (services/results/alerts): delivery back-off on the alerts queue (base x 2^(attempt-1),
    # capped, with jitter; SCHIZODOT_MAX_RECEIVE_COUNT attempts, then dead-lettered) and the
    # no-check-in sweep, run every this many seconds by the worker.
    alert_retry_base_seconds: float = Field(10.0, gt=0, le=3600)
    alert_retry_max_seconds: float = Field(900.0, gt=0, le=43200)
    alert_sweep_interval_seconds: float = Field(3600.0, gt=0)
    # Earlier results the alert rules look at (a missed-medication streak needs that many).
    alert_history: int = Field(50, ge=1, le=500)

    @field_validator("console_url")
    @classmethod
    def _no_trailing_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value
