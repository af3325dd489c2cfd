"""The patient check-in page and its resumable upload API (served by the ingest service)."""

from services.ingest.patient.router import CheckinJobs, create_patient_router
from services.ingest.patient.script import CheckinScript, ScriptCatalog
from services.ingest.patient.uploads import MultipartStore, S3MultipartStore, UploadPolicy

__all__ = ["CheckinJobs", "CheckinScript", "MultipartStore", "S3MultipartStore", "ScriptCatalog", "UploadPolicy",
           "create_patient_router"]
