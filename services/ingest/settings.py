from pathlib import Path
import tempfile

from pydantic import Field

from shared.settings import CommonSettings


class IngestSettings(CommonSettings):
    service_name: str = "schizodot-ingest"
    api_host: str = Field("127.0.0.1", validation_alias="INGEST_API_HOST")
    api_port: int = Field(8080, validation_alias="INGEST_API_PORT")
    # The S3 endpoint clients upload to, when it differs from the one this
    # service reaches (compose: the service sees http://moto:4566, a browser
    # on the host sees http://localhost:4566). Unset: the same endpoint.
    public_s3_endpoint_url: str | None = Field(None, validation_alias="INGEST_PUBLIC_S3_ENDPOINT_URL")
    upload_url_expiry_seconds: int = Field(900, ge=60, le=7 * 24 * 3600)
    max_upload_bytes: int = Field(2 * 1024**3, ge=1)
    min_duration_seconds: float = 1.0
    max_duration_seconds: float = 900.0
    work_dir: Path = Path(tempfile.gettempdir())
