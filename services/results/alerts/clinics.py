"""Each clinic's settings for the console and its alerts: name, time zone, alert
rules and where alerts are delivered.

One JSON file (`SCHIZODOT_CLINICS_FILE`) holds every clinic; the ingest service
reads its `checkin` sections from the same file (services/ingest/patient/script.py). A clinic without an entry gets
`default`. Secrets are never in the file: a webhook names the file or the
environment variable that holds its signing secret.

    {"default": {"timezone": "UTC"},
     "clinics": {"clinic-north": {
         "name": "North Clinic", "timezone": "Europe/Berlin",
         "alerts": {"risk_levels": ["high"], "missed_medication_streak": 2, "no_checkin_days": 7},
         "delivery": {"webhook": {"url": "https://ehr.example/hooks/schizodot",
                                  "secret_file": "/run/secrets/north-webhook"},
                      "sns_topic_arn": "arn:aws:sns:eu-central-1:123456789012:north-alerts"}}}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.errors import ConfigurationError


class ClinicsFileError(ConfigurationError, ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message, "SCHIZODOT_CLINICS_FILE")


class AlertRules(BaseModel):
    """What raises an alert. Each rule can be switched off (empty list, None or False)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    risk_levels: tuple[str, ...] = Field(("high",), description="risk levels of a check-in that raise an alert")
    missed_medication_streak: int | None = Field(
        2, ge=1, le=50, description="this many check-ins in a row with the medication seen not taken")
    baseline_decline: bool = Field(True, description="a marker notably worse than the patient's own baseline")
    transcript_flags: bool = Field(True, description="a phrase flagged in the transcript")
    no_checkin_days: int | None = Field(7, ge=1, le=365, description="no check-in for this many days (sweep)")

    @field_validator("risk_levels")
    @classmethod
    def _levels(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(value) - {"low", "moderate", "high"}
        if unknown:
            raise ValueError(f"unknown risk levels {sorted(unknown)}; use low, moderate or high")
        return value


class WebhookTarget(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://")
    secret_file: Path | None = None
    secret_env: str | None = None
    timeout_seconds: float = Field(10.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one_secret(self) -> "WebhookTarget":
        if (self.secret_file is None) == (self.secret_env is None):
            raise ValueError("a webhook needs exactly one of secret_file or secret_env (its signing secret)")
        return self

    def secret(self) -> str:
        """The signing secret (Standard Webhooks: 'whsec_' + base64), read when it is used, so it can rotate."""
        if self.secret_file is not None:
            value = self.secret_file.read_text(encoding="utf-8").strip()
        else:
            value = os.environ.get(self.secret_env or "", "").strip()
        if not value:
            where = self.secret_file or f"${self.secret_env}"
            raise ValueError(f"the webhook signing secret in {where} is empty or missing")
        return value


class AlertDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: WebhookTarget | None = None
    sns_topic_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:sns:")

    def channels(self) -> list[str]:
        return [name for name, target in (("webhook", self.webhook), ("sns", self.sns_topic_arn)) if target]


class ClinicProfile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str | None = Field(None, max_length=200)
    timezone: str = "UTC"
    alerts: AlertRules = AlertRules()
    delivery: AlertDelivery = AlertDelivery()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone '{value}' (use an IANA name such as Europe/Berlin)") from error
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


class _ClinicsFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    default: ClinicProfile = ClinicProfile()
    clinics: dict[str, ClinicProfile] = {}


class ClinicDirectory:
    def __init__(self, default: ClinicProfile | None = None, clinics: dict[str, ClinicProfile] | None = None) -> None:
        self.default = default or ClinicProfile()
        self._clinics = dict(clinics or {})

    @classmethod
    def from_file(cls, path: Path, *, plain_http_webhooks: bool = False) -> "ClinicDirectory":
        """Raises ConfigurationError (a ValueError too) naming the problem: the service does not start on a bad file.

        Alerts name patients: a webhook must be https://, except on the embedded stack
        (`plain_http_webhooks`: one machine, a receiver on loopback)."""
        try:
            parsed = _ClinicsFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, ValueError) as error:
            raise ClinicsFileError(f"the clinics file {path} cannot be used: {error}") from error
        if not plain_http_webhooks:
            for name, profile in [("default", parsed.default), *parsed.clinics.items()]:
                webhook = profile.delivery.webhook
                if webhook is not None and not webhook.url.lower().startswith("https://"):
                    raise ClinicsFileError(f"the clinics file {path} cannot be used: {name}: the webhook URL must "
                                           "start with https:// (alerts name patients)")
        return cls(parsed.default, parsed.clinics)

    def get(self, clinic_id: str) -> ClinicProfile:
        return self._clinics.get(clinic_id, self.default)

    def configured(self) -> list[str]:
        return sorted(self._clinics)
