"""The patient check-in page and its resumable upload API (served by the ingest service)."""

from services.ingest.patient.router import CheckinJobs, body_limits, create_patient_router, open_paths
from services.ingest.patient.script import CheckinScript, ScriptCatalog
from services.ingest.patient.uploads import MultipartPolicy, MultipartStore, S3MultipartStore, UploadMode, stream_to_s3

__all__ = ["CheckinJobs", "CheckinScript", "MultipartPolicy", "MultipartStore", "S3MultipartStore", "ScriptCatalog",
           "UploadMode", "body_limits", "create_patient_router", "open_paths", "stream_to_s3"]
