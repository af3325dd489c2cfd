"""The results API with the console mounted, on in-memory adapters (shared.fakes) and real
identity: tokens signed by a development issuer in a temporary folder, checked by
shared.identity.auth exactly as in the service, with the session cookie on /console."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config

from schizodot.dev_identity import AUDIENCE, ISSUER, DevIssuer
from services.results.alerts import AlertService, InMemoryAlertStore, InMemoryRoster
from services.results.api import ResultsAccess, create_app
from services.results.console.oidc import OidcSignIn
from services.results.console.ports import S3MediaLinks
from services.results.console.router import create_console_router
from services.results.console.session_store import InMemorySessionStore
from services.results.console.sessions import ConsoleSessions, SessionPolicy, derive_key
from services.results.dosing import DosingReviews
from services.results.ehr.publisher import EhrPublisher
from services.results.erasure import MemoryErasures
from services.results.settings import ResultsSettings
from shared.domain.clinics import ClinicDirectory, ClinicProfile
from shared.domain.job import new_job
from shared.fakes import (
    InMemoryApiKeys,
    InMemoryHistory,
    InMemoryJobs,
    InMemoryPatientLinks,
    MemoryAuditStore,
    MemoryStorage,
)
from shared.identity.audit import AuditTrail
from shared.identity.auth import Authenticator
from shared.identity.middleware import principal_dependency
from shared.identity.principal import patient_key
from shared.identity.tokens import AuthSettings

COOKIE = "schizodot_session"
PSEUDONYM_KEY = "console-test-pseudonym-key"
# name -> (development user whose role it has, its clinic)
USERS = {"north": ("dev-clinician", "clinic-north"), "south": ("dev-clinician", "clinic-south"),
         "north-admin": ("dev-admin", "clinic-north"), "uploader": ("dev-uploader", "clinic-north")}


def stored(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Items in the clinic's view (`user_id` the clinic's own id) as SchizodotUsers holds them."""
    return [{**item, "user_id": patient_key(item["clinic_id"], item["user_id"])} for item in items]


class EhrInbox:
    """The EHR's queue, as the results service sends to it (SQS `send_message`)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_message(self, *, QueueUrl: str, MessageBody: str, MessageAttributes: dict) -> dict[str, str]:
        self.sent.append(json.loads(MessageBody))
        return {"MessageId": f"ehr-{len(self.sent)}"}


class QueuedAlerts:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def send(self, event: Any) -> None:
        self.sent.append(event)


class Console:
    def __init__(self, state_dir: Path, now: datetime | None = None, endpoint: str = "http://127.0.0.1:9",
                 clinics: ClinicDirectory | None = None, policy: SessionPolicy = SessionPolicy(),
                 session_store: Any = None, session_clock: Any = None) -> None:
        self.issuer = DevIssuer(state_dir).ensure()
        auth = AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=self.issuer.jwks_path, session_cookie=COOKIE,
                            cookie_paths=("/console",))
        self.api_keys = InMemoryApiKeys()  # the API's key routes and the authenticator share it, as in the service
        self.authenticator = Authenticator(auth, self.api_keys, InMemoryPatientLinks())
        self.audit_store = MemoryAuditStore()
        self.audit = AuditTrail(self.audit_store, PSEUDONYM_KEY, "schizodot-results")
        self.history, self.jobs = InMemoryHistory(), InMemoryJobs()
        self.roster, self.alerts = InMemoryRoster(), InMemoryAlertStore()
        self.clinics = clinics or ClinicDirectory(clinics={
            "clinic-north": ClinicProfile(name="North Clinic", timezone="Europe/Berlin"),
            "clinic-south": ClinicProfile(name="South Clinic", timezone="America/New_York")})
        signer = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing",
                              config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        self.media = S3MediaLinks(signer, "schizodot-media")
        now = now or datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
        self.session_store = session_store or InMemorySessionStore()
        self.sessions = ConsoleSessions(self.authenticator, derive_key(PSEUDONYM_KEY, "console-csrf"), COOKIE,
                                        store=self.session_store, audit=self.audit, policy=policy,
                                        **({"clock": session_clock} if session_clock else {}))
        self.storage, self.ehr_inbox, self.alert_queue = MemoryStorage(), EhrInbox(), QueuedAlerts()
        self.reviews = DosingReviews(
            self.jobs, self.history, self.history, self.audit, storage=self.storage,
            alerts=AlertService(self.alerts, self.roster, self.clinics, self.alert_queue, clock=lambda: now),
            ehr=EhrPublisher(self.ehr_inbox, None, "https://sqs.test/ehr-inbox", None), clock=lambda: now)
        console = create_console_router(
            principal=principal_dependency(self.authenticator), jobs=self.jobs, history=self.history,
            roster=self.roster, alerts=self.alerts, media=self.media, audit=self.audit, clinics=self.clinics,
            sessions=self.sessions, oidc=OidcSignIn(self.session_store), clock=lambda: now, reviews=self.reviews)

        async def no_erasures(body: str) -> str:
            raise AssertionError("no erasure here")

        self.app = create_app(ResultsSettings(), self.jobs, self.history,
                              ResultsAccess(self.authenticator, self.audit, self.api_keys, MemoryErasures(),
                                            no_erasures), console=console, reviews=self.reviews)

    def token(self, name: str, **claims: Any) -> str:
        user, clinic = USERS[name]
        return self.issuer.mint(user, schizodot_clinic=clinic, **claims)

    async def session(self, name: str) -> str:
        """A signed-in browser's cookie value: a server-side session of the user (as a login link makes)."""
        who, seconds = await self.sessions.principal_of_token(self.token(name))
        return (await self.sessions.begin(who, "token", ends_within=seconds))[0]

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(name)}"}

    async def add(self, items: list[dict[str, Any]]) -> None:
        """Results in the clinic's view, stored as the results stage stores them, and on the roster."""
        for item in stored(items):
            await self.history.save(item)
        for item in items:
            await self.roster.record_checkin(item["clinic_id"], item["user_id"], item["job_id"], item["timestamp"])

    async def add_jobs(self, items: list[dict[str, Any]], status: str = "completed") -> None:
        """The SchizodotJobs items of the check-ins, in `status` (a review needs its job)."""
        for item in items:
            job = new_job(item["job_id"], patient_id=patient_key(item["clinic_id"], item["user_id"]),
                          s3_key=item["s3_key"], filename="checkin.webm", content_type="video/webm",
                          created_at=item["timestamp"], message="queued", source="api", clinic_id=item["clinic_id"])
            await self.jobs.create(job)
            self.jobs.items[job.job_id].update({"status": status, "results": {"compliance_score": None}})

    def audit_records(self) -> list[dict[str, Any]]:
        return sorted(self.audit_store.records.values(), key=lambda r: r["at"])
