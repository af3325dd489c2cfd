"""The patient check-in page and its resumable upload API (served by the ingest service)."""

from services.ingest.patient.router import CheckinJobs, create_patient_router, open_paths
from services.ingest.patient.script import CheckinScript, ScriptCatalog
from services.ingest.patient.uploads import MultipartPolicy, MultipartStore, S3MultipartStore

__all__ = ["CheckinJobs", "CheckinScript", "MultipartPolicy", "MultipartStore", "S3MultipartStore", "ScriptCatalog",
           "create_patient_router", "open_paths"]
