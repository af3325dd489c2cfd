"""Ingest's settings: its API (`INGEST_*`) and what an upload may be (`SCHIZODOT_*`)."""

import tempfile
from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.ingest.patient.uploads import UploadMode
from shared.identity.tokens import AuthSettings
from shared.settings import StageSettings


class UploadPolicy(StageSettings):
    """What a check-in's media may be, and where ingest checks it."""

    model_config = SettingsConfigDict(env_prefix="SCHIZODOT_", extra="ignore", frozen=True)

    upload_url_expiry_seconds: int = Field(900, ge=60, le=7 * 24 * 3600)
    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    min_duration_seconds: float = 1.0
    max_duration_seconds: float = 900.0
    work_dir: Path = Path(tempfile.gettempdir())


class CheckinLimits(StageSettings):
    """Abuse limits and patient links (`INGEST_*`)."""

    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", frozen=True)

    checkins_per_window: int = Field(60, ge=1)  # check-ins one credential may create per window (429 beyond)
    window_seconds: int = Field(60, ge=1)
    patient_link_seconds: int = Field(12 * 3600, ge=60)  # a link's default lifetime
    patient_link_max_seconds: int = Field(7 * 24 * 3600, ge=60)
    patient_page_url: str = "/checkin"  # where links point (the patient page); its public address in production


class IngestSettings(StageSettings):
    model_config = SettingsConfigDict(env_prefix="INGEST_", extra="ignore", frozen=True)

    api_host: str = "127.0.0.1"
    api_port: int = 8080
    # How phones and clinic apps send recordings (docs/uploads.md): "proxy" through this API, which
    # writes them to S3 itself (the embedded stack and compose: their AWS server stays private), or
    # "presigned" straight to S3 (real AWS, whose endpoint is built to face the internet).
    upload_mode: UploadMode = "proxy"
    # Mode "presigned": the S3 endpoint clients upload to, when it differs from the one this
    # service reaches. Unset: the same endpoint.
    public_s3_endpoint_url: str | None = None
    # The patient page (/checkin) uploads in parts of this size (S3 wants at least 5 MiB for
    # every part but the last), each its own request; SCHIZODOT_MAX_UPLOAD_BYTES bounds the whole.
    # In mode "proxy" it is also the most this API holds in memory per upload.
    patient_part_bytes: int = Field(8 * 1024**2, ge=1)
    # Mode "proxy": an open upload of a check-in that S3 has seen no part of (ListParts' LastModified, or
    # its Initiated) for this long is abandoned (its ingest process died, or its abort failed), and a new
    # PUT of the recording aborts it and takes over; a livelier one answers 409 with Retry-After. A live
    # upload shows a part every `patient_part_bytes`: 8 MiB in 120 s is a sender at 0.56 Mbit/s, slower
    # than a phone on a weak 3G uplink still manages (about 1 Mbit/s: 67 s a part), while a client kept
    # waiting by a dead upload waits 2 minutes, not the day until the bucket's lifecycle rule.
    upload_stale_seconds: float = Field(120.0, ge=1.0)
    uploads: UploadPolicy = Field(default_factory=UploadPolicy)
    limits: CheckinLimits = Field(default_factory=CheckinLimits)
    auth: AuthSettings = Field(default_factory=AuthSettings)  # who people are (SCHIZODOT_AUTH_*, shared.identity.auth)
