"""The clinician console (served by the results service): patient list, patient
and check-in pages with plots, CSV and PDF exports, alert acknowledgement, dosing
review. Entry point: `create_console_router` (router.py), with the adapters the
composition root builds for it."""

from services.results.console.oidc import OidcSignIn
from services.results.console.ports import S3MediaLinks
from services.results.console.router import create_console_router, open_paths
from services.results.console.session_store import DynamoSessionStore
from services.results.console.sessions import ConsoleSessions, SessionPolicy, derive_key

__all__ = ["ConsoleSessions", "DynamoSessionStore", "OidcSignIn", "S3MediaLinks", "SessionPolicy",
           "create_console_router", "derive_key", "open_paths"]
