"""The clinics file (`SCHIZODOT_CLINICS_FILE`): one schema for every service that reads it.

One JSON file holds every clinic's settings; a clinic without an entry gets `default`.
Each service reads the sections it needs from the same parsed `ClinicProfile`:
ingest the check-in script (`checkin`), audio the expected languages (`languages`,
checked against Whisper's codes by the audio service), results the name, time zone,
alert rules, delivery and sign-in providers. Secrets are never in the file: a webhook
or a sign-in provider names the file or the environment variable that holds its secret.

    {"default": {"timezone": "UTC", "languages": ["en"]},
     "clinics": {"clinic-north": {
         "name": "North Clinic", "timezone": "Europe/Berlin", "languages": ["de", "en"],
         "checkin": {"prompts": [{"id": "mood", "text": "How are you feeling today?"}], "max_seconds": 240},
         "alerts": {"risk_levels": ["high"], "missed_medication_streak": 2, "no_checkin_days": 7},
         "delivery": {"webhook": {"url": "https://ehr.example/hooks/schizodot",
                                  "secret_file": "/run/secrets/north-webhook"},
                      "sns_topic_arn": "arn:aws:sns:eu-central-1:123456789012:north-alerts"},
         "sign_in": [{"id": "entra", "name": "North Health (Microsoft)",
                      "issuer": "https://login.microsoftonline.com/<tenant>/v2.0",
                      "client_id": "<application id>", "client_secret_file": "/run/secrets/north-oidc",
                      "role_claim": "roles", "roles": {"clinician": ["SchizoDot.Clinician"],
                                                       "clinic_admin": ["SchizoDot.Admin"]},
                      "require_mfa": true}]}}}

`checkin` replaces the prompts, the observed-dosing steps and the recording limits
(anything not set keeps the seed system's defaults below); `sign_in` lists the clinic's
OpenID Providers (docs/sign-in.md).
"""

from __future__ import annotations

import ipaddress
import json
import os
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.domain.errors import ConfigurationError


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9_]{1,40}$")
    text: str = Field(min_length=1, max_length=300)
    hint: str | None = Field(None, max_length=300)


# The seed system's five guided questions.
DEFAULT_PROMPTS = (
    Step(id="mood", text="How has your mood been since your last check-in?",
         hint="Say it in your own words; there are no wrong answers."),
    Step(id="medication", text="Did you take your medication as prescribed, or did you miss any doses?"),
    Step(id="side_effects", text="Have you noticed any side effects?",
         hint="For example feeling restless, sleepy, stiff or dizzy."),
    Step(id="sleep", text="How have you been sleeping?"),
    Step(id="anything_else", text="Is there anything else you would like your care team to know?"),
)

# The observed-dosing protocol the vision stage looks for, in its order.
DEFAULT_DOSING_STEPS = (
    Step(id="show_pill", text="Hold your pill up to the camera.", hint="Keep it near your face, in the light."),
    Step(id="place_on_tongue", text="Place the pill on your tongue.", hint="Open your mouth so the camera sees it."),
    Step(id="close_mouth", text="Close your mouth and swallow.", hint="Take a sip of water if you need to."),
    Step(id="show_empty", text="Open your mouth to show it is empty."),
)


class CheckinScript(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: tuple[Step, ...] = Field(DEFAULT_PROMPTS, min_length=1, max_length=20)
    dosing_steps: tuple[Step, ...] = Field(DEFAULT_DOSING_STEPS, max_length=10)
    max_seconds: int = Field(300, ge=10, le=900, description="the recording stops by itself after this long")
    min_seconds: int = Field(5, ge=1, le=60)


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
        return _secret(self.secret_file, self.secret_env, "webhook signing secret")


class AlertDelivery(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    webhook: WebhookTarget | None = None
    sns_topic_arn: str | None = Field(None, pattern=r"^arn:aws[a-z-]*:sns:")

    def channels(self) -> list[str]:
        return [name for name, target in (("webhook", self.webhook), ("sns", self.sns_topic_arn)) if target]


def _secret(file: Path | None, env: str | None, what: str) -> str:
    """A secret named by a file or an environment variable, read when it is used (so it can rotate)."""
    value = file.read_text(encoding="utf-8").strip() if file is not None else os.environ.get(env or "", "").strip()
    if not value:
        raise ValueError(f"the {what} in {file or f'${env}'} is empty or missing")
    return value


# `amr` values (RFC 8176) that say a second factor was used; a provider may name others (`mfa_amr`).
MFA_AMR = ("mfa", "otp", "hwk", "swk", "sms", "tel", "fpt", "face", "iris", "retina", "vbm", "sc", "pop")
SIGN_IN_ROLES = ("clinician", "clinic_admin")


def _loopback(host: str | None) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


class SignInProvider(BaseModel):
    """A clinic's OpenID Provider for the console (authorization code with PKCE; docs/sign-in.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$", description="in the sign-in URL")
    name: str = Field(max_length=100, description="shown as 'Sign in with <name>'")
    issuer: str = Field(description="the provider's issuer, exactly as its discovery document states it")
    client_id: str = Field(min_length=1, max_length=300)
    # The client secret is never in this file: a file (a mounted Secret) or an environment variable.
    client_secret_file: Path | None = None
    client_secret_env: str | None = None
    scopes: tuple[str, ...] = ("openid", "profile", "email")
    role_claim: str = Field("groups", description="a dotted path to a string or a list (groups, roles, ...)")
    roles: dict[str, tuple[str, ...]] = Field(description="clinician / clinic_admin: the claim values that give it")
    name_claim: str = "name"
    require_mfa: bool = False
    mfa_amr: tuple[str, ...] = MFA_AMR  # any of these in `amr` meets the MFA requirement
    mfa_acr: tuple[str, ...] = ()  # or `acr` equal to one of these (also asked for as acr_values)

    @field_validator("issuer")
    @classmethod
    def _https(cls, value: str) -> str:
        parts = urlsplit(value)
        if not (parts.scheme == "https" or (parts.scheme == "http" and _loopback(parts.hostname))):
            raise ValueError(f"the issuer {value!r} must be https:// (http only on loopback, for tests)")
        return value

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        unknown = set(value) - set(SIGN_IN_ROLES)
        if unknown or not any(value.values()):
            raise ValueError(f"roles maps {' and '.join(SIGN_IN_ROLES)} to claim values "
                             f"(unknown: {sorted(unknown)})" if unknown else "roles maps no claim value to a role")
        return value

    @model_validator(mode="after")
    def _one_secret(self) -> "SignInProvider":
        if (self.client_secret_file is None) == (self.client_secret_env is None):
            raise ValueError(f"sign-in provider {self.id!r} needs exactly one of client_secret_file or "
                             "client_secret_env (never the secret itself)")
        if "openid" not in self.scopes:
            raise ValueError(f"sign-in provider {self.id!r}: scopes must include openid")
        return self

    def client_secret(self) -> str:
        return _secret(self.client_secret_file, self.client_secret_env, f"client secret of {self.id}")


class ClinicProfile(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str | None = Field(None, max_length=200)
    timezone: str = "UTC"
    alerts: AlertRules = AlertRules()
    delivery: AlertDelivery = AlertDelivery()
    sign_in: tuple[SignInProvider, ...] = ()
    checkin: CheckinScript = CheckinScript()
    # Whisper's language codes; the audio service checks them against Whisper at start-up.
    languages: tuple[str, ...] | None = Field(None, min_length=1, max_length=20)

    @field_validator("sign_in")
    @classmethod
    def _unique_providers(cls, value: tuple[SignInProvider, ...]) -> tuple[SignInProvider, ...]:
        ids = [p.id for p in value]
        if len(ids) != len(set(ids)):
            raise ValueError(f"sign-in provider ids must differ within a clinic: {ids}")
        return value

    def provider(self, provider_id: str) -> SignInProvider | None:
        return next((p for p in self.sign_in if p.id == provider_id), None)

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


class ClinicsFile(BaseModel):
    model_config = ConfigDict(extra="ignore")

    default: ClinicProfile = ClinicProfile()
    clinics: dict[str, ClinicProfile] = {}


def read_clinics_file(path: Path) -> ClinicsFile:
    """The parsed file; ClinicsFileError (a ConfigurationError naming the setting) on any problem,
    so a service refuses to start rather than run with a clinic's settings misread."""
    try:
        return ClinicsFile.model_validate(json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError) as error:
        raise ClinicsFileError(f"the clinics file {path} cannot be used: {error}") from error


class ClinicDirectory:
    """Each clinic's profile; a clinic without an entry gets the default."""

    def __init__(self, default: ClinicProfile | None = None, clinics: dict[str, ClinicProfile] | None = None) -> None:
        self.default = default or ClinicProfile()
        self._clinics = dict(clinics or {})

    @classmethod
    def from_file(cls, path: Path, *, plain_http_webhooks: bool = False) -> "ClinicDirectory":
        """Raises ConfigurationError (a ValueError too) naming the problem: the service does not start on a bad file.

        Alerts name patients: a webhook must be https://, except on the embedded stack
        (`plain_http_webhooks`: one machine, a receiver on loopback)."""
        parsed = read_clinics_file(path)
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

    def signing_in(self) -> list[tuple[str, ClinicProfile]]:
        """The clinics whose people sign in with their own provider (the sign-in page lists them)."""
        return [(clinic_id, self._clinics[clinic_id]) for clinic_id in self.configured() if self._clinics[clinic_id].sign_in]
