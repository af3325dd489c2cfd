"""Settings every service shares (`CommonSettings`); each service adds one class
of its own (`services/<stage>/settings.py`) with its own prefix.

One env prefix per class: a field `x` of `CommonSettings` is `SCHIZODOT_X`.
The only other names are the ones operators already know: the AWS SDK's own
variables (`AWS_REGION`, `AWS_ENDPOINT_URL`: unset means real AWS) and the seed
system's `DYNAMO_TABLE` / `DYNAMO_TABLE_JOBS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# Pseudonym keys published as defaults (this repository's compose file and .env.example used the first).
DEVELOPMENT_PSEUDONYM_KEYS = frozenset({"local-development-only", "changeme", "change-me", "secret", "development",
                                        "dev", "test", "testing"})


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SCHIZODOT_", populate_by_name=True, extra="ignore", frozen=True
    )

    aws_region: str = Field(
        "us-east-1", validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION")
    )
    aws_endpoint_url: str | None = Field(None, validation_alias="AWS_ENDPOINT_URL")
    # botocore's own retry modes and variable names: throttling, 5xx and dropped
    # connections are retried with back-off inside the SDK (total attempts, first included).
    aws_retry_mode: Literal["standard", "adaptive"] = Field("standard", validation_alias="AWS_RETRY_MODE")
    aws_max_attempts: int = Field(8, ge=1, le=20, validation_alias="AWS_MAX_ATTEMPTS")
    jobs_table: str = Field("SchizodotJobs", validation_alias="DYNAMO_TABLE_JOBS")
    users_table: str = Field("SchizodotUsers", validation_alias="DYNAMO_TABLE")
    bucket: str = "schizodot-media"
    queue_prefix: str = "schizodot-"

    # Queue behaviour: a message is retried up to max_receive_count times, then
    # dead-lettered. Visibility is short and extended by a heartbeat while work runs.
    max_receive_count: int = Field(5, ge=1, le=1000)
    visibility_timeout_seconds: int = Field(60, ge=5, le=43200)
    wait_time_seconds: int = Field(20, ge=0, le=20)
    concurrency: int = Field(2, ge=1, le=64)
    retry_backoff_seconds: int = Field(5, ge=0, le=900)
    shutdown_grace_seconds: float = Field(25.0, ge=0)

    service_name: str | None = None  # unset: schizodot-<stage>
    log_level: str = "INFO"

    # Observability (the OpenTelemetry SDK reads its own OTEL_* variables).
    metrics_port: int = Field(0, ge=0, le=65535)  # /metrics for Prometheus; 0 = off
    metrics_host: str = "0.0.0.0"  # Prometheus scrapes from elsewhere in a cluster
    queue_metrics_interval_seconds: float = Field(15.0, gt=0)
    pseudonym_key: str | None = Field(None, repr=False)  # HMAC key for patient references in logs and
    # the audit trail; one for all services, a secret (the APIs refuse to start without it, and every
    # service refuses a published development key outside the embedded stack)
    # Set by the embedded stack (schizodot.stack) only: one machine, loopback, development. It alone
    # may use a published development pseudonym key and plain http:// webhooks.
    embedded_stack: bool = False

    def check_pseudonym_key(self, *, required: bool) -> None:
        """ConfigurationError when the key is missing (and `required`) or is a published development
        key outside the embedded stack: anyone could reverse the patient references made with it."""
        from shared.domain.errors import ConfigurationError

        if not self.pseudonym_key:
            if required:
                raise ConfigurationError(
                    "the audit trail needs a pseudonym key: set SCHIZODOT_PSEUDONYM_KEY to a secret (e.g. `openssl "
                    "rand -hex 32`), the same for every service", "SCHIZODOT_PSEUDONYM_KEY")
            return
        if self.pseudonym_key.strip().lower() in DEVELOPMENT_PSEUDONYM_KEYS and not self.embedded_stack:
            raise ConfigurationError(
                "SCHIZODOT_PSEUDONYM_KEY is a published development key: set a secret of your own "
                "(e.g. `openssl rand -hex 32`), the same for every service", "SCHIZODOT_PSEUDONYM_KEY")

    # Protected health information (issue 12): where identities, the audit trail and
    # erasures are kept, the KMS key everything is encrypted with, and retention.
    api_keys_table: str = "SchizodotApiKeys"
    patient_links_table: str = "SchizodotPatientLinks"
    rate_limits_table: str = "SchizodotRateLimits"
    erasures_table: str = "SchizodotErasures"
    audit_bucket: str = "schizodot-audit"
    audit_retention_days: int = Field(2190, ge=1)  # Object Lock, compliance mode: six years (HIPAA)
    kms_key_alias: str = "alias/schizodot"
    media_retention_days: int = Field(30, ge=1)  # raw uploads expire (S3 lifecycle); findings stay until erased
    # The bucket policy (TLS only, KMS only) on real AWS; "auto" skips it on a local
    # endpoint, whose emulators evaluate its conditions without the request's context.
    bucket_policy: Literal["auto", "enforce", "skip"] = "auto"

    # The clinic's door (issue 13): alerts and the clinic's patients (both results-only
    # tables), each clinic's settings (prompts, time zone, alert rules and where alerts
    # go; read by ingest and results), and the browser origins (the patient page's, the
    # console's) allowed to send media straight to the bucket (its CORS rule; none: no rule).
    alerts_table: str = "SchizodotAlerts"
    clinic_patients_table: str = "SchizodotClinicPatients"
    # The console's server-side sessions and sign-ins in progress (results only; issue 23).
    console_sessions_table: str = "SchizodotConsoleSessions"
    clinics_file: Path | None = None
    browser_origins: Annotated[tuple[str, ...], NoDecode] = ()  # comma-separated in the environment

    @field_validator("browser_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip().rstrip("/") for part in value.split(",") if part.strip())
        return value

    def queue_name(self, stage: str) -> str:
        return f"{self.queue_prefix}{stage}"

    def dead_letter_queue_name(self, stage: str) -> str:
        return f"{self.queue_prefix}{stage}-dlq"


class StageSettings(BaseSettings):
    """Base of a service's own settings class; the subclass names its env prefix."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True)
