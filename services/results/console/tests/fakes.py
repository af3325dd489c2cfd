"""In-memory SchizodotJobs and SchizodotUsers with the methods the console uses, and a console app for tests."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import boto3
from botocore.config import Config
from fastapi import Cookie, FastAPI, Header, HTTPException

from services.results.alerts.clinics import ClinicDirectory, ClinicProfile
from services.results.alerts.roster import InMemoryRoster
from services.results.alerts.store import InMemoryAlertStore
from services.results.console.ports import RecordingAudit, S3MediaLinks
from services.results.console.router import create_console_router
from shared.identity import CredentialKind, Principal, Role


class FakeHistory:
    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    async def latest(self, patient_id: str, limit: int = 10) -> list[dict[str, Any]]:
        mine = sorted((i for i in self.items if i["user_id"] == patient_id), key=lambda i: i["timestamp"],
                      reverse=True)
        return mine[:limit]

    async def for_job(self, patient_id: str, job_id: str) -> dict[str, Any] | None:
        return next((i for i in self.items if i["user_id"] == patient_id and i["job_id"] == job_id), None)


class FakeJobs:
    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}

    async def get(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id)

    async def list_for_patient(self, patient_id: str, limit: int = 20, status: str | None = None):
        found = [j for j in self.jobs.values() if j["patient_id"] == patient_id and (not status or j["status"] == status)]
        return sorted(found, key=lambda j: j["created_at"], reverse=True)[:limit]


def clinician(clinic: str = "clinic-north", role: Role = Role.CLINICIAN, name: str = "Dr Ada") -> Principal:
    return Principal(subject=f"user-{clinic}-{role.value}", role=role, clinic_id=clinic,
                     credential=CredentialKind.BEARER, display_name=name)


PRINCIPALS = {"north": clinician("clinic-north"), "south": clinician("clinic-south", name="Dr South"),
              "uploader": clinician("clinic-north", Role.UPLOADER)}


async def test_principal(x_test_user: str | None = Header(None), test_user: str | None = Cookie(None)) -> Principal:
    """Stands for issue 12's dependency: a principal by name (a header, or a cookie for browsers), else 401."""
    name = x_test_user or test_user
    if name in PRINCIPALS:
        return PRINCIPALS[name]
    raise HTTPException(status_code=401, detail="authentication required")


class Console:
    def __init__(self, audit=None, now: datetime | None = None, endpoint: str = "http://127.0.0.1:9") -> None:
        self.history, self.jobs = FakeHistory(), FakeJobs()
        self.roster, self.alerts, self.audit = InMemoryRoster(), InMemoryAlertStore(), audit or RecordingAudit()
        self.clinics = ClinicDirectory(clinics={
            "clinic-north": ClinicProfile(name="North Clinic", timezone="Europe/Berlin"),
            "clinic-south": ClinicProfile(name="South Clinic", timezone="America/New_York")})
        signer = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing",
                              aws_secret_access_key="testing",
                              config=Config(signature_version="s3v4", s3={"addressing_style": "path"}))
        self.media = S3MediaLinks(signer, "schizodot-media")
        now = now or datetime(2026, 11, 20, 12, 0, tzinfo=timezone.utc)
        self.app = FastAPI()
        self.app.include_router(create_console_router(
            principal=test_principal, jobs=self.jobs, history=self.history, roster=self.roster, alerts=self.alerts,
            media=self.media, audit=self.audit, clinics=self.clinics, clock=lambda: now))

    async def add(self, items: list[dict[str, Any]]) -> None:
        self.history.items += items
        for item in items:
            await self.roster.record_checkin(item["clinic_id"], item["user_id"], item["job_id"], item["timestamp"])
