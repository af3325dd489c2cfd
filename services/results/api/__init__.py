"""The read API: a clinic's patients' history and job status, dosing reviews, the audit trail and API
keys, with the clinician console and erasure routes mounted beside it. Entry point: `create_app` (app.py)."""

from services.results.api.app import ResultsAccess, create_app

__all__ = ["ResultsAccess", "create_app"]
