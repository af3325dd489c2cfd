"""The ingest API with the patient page mounted, as services/ingest/main.py composes it,
on a real S3 and DynamoDB (moto's server), with real identity: tokens signed by a
development issuer in a temporary folder and patient links stored in DynamoDB.
Uploads go through the API (upload mode "proxy", as the embedded stack and compose run it) unless
a test asks for "presigned". Only the part size is the test's (the emulator's 5 MiB floor is lowered), so that a
few seconds of video make several parts. Used by the API tests here and the
browser tests (tests/browser)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from schizodot.dev_identity import AUDIENCE, ISSUER, DevIssuer
from services.ingest.api import IngestAccess, PatientPage, UploadProxy, create_app
from services.ingest.patient import (
    MultipartPolicy,
    S3MultipartStore,
    ScriptCatalog,
    UploadMode,
    body_limits,
    create_patient_router,
    open_paths,
)
from services.ingest.settings import CheckinLimits, UploadPolicy
from shared.aws.clients import AsyncClients, sync_client
from shared.aws.jobs import JobsRepository
from shared.identity.access import Access, build_access
from shared.identity.tokens import AuthSettings
from shared.settings import CommonSettings

PSEUDONYM_KEY = "patient-page-test-pseudonym-key"


@dataclass
class IngestSite:
    app: FastAPI
    access: Access
    jobs: JobsRepository
    store: S3MultipartStore
    issuer: DevIssuer

    def auth(self, user: str = "dev-clinician", **claims: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.issuer.mint(user, **claims)}"}


@asynccontextmanager
async def ingest_site(settings: CommonSettings, state_dir: Path, *, part_bytes: int, max_bytes: int,
                      scripts: ScriptCatalog | None = None, upload_mode: UploadMode = "proxy",
                      upload_stale_seconds: float = 120.0) -> AsyncIterator[IngestSite]:
    common = settings.model_copy(update={"pseudonym_key": PSEUDONYM_KEY})
    issuer = DevIssuer(state_dir).ensure()
    auth = AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=issuer.jwks_path)
    async with AsyncClients(common) as clients:
        access = build_access(common, clients, service="schizodot-ingest", auth=auth)
        jobs = JobsRepository(clients.dynamodb, common.jobs_table)
        store = S3MultipartStore(clients.s3, sync_client(common, "s3"), common.bucket)
        policy = MultipartPolicy(max_bytes=max_bytes, part_bytes=part_bytes, url_expiry_seconds=300)
        router = create_patient_router(
            principal=access.principal, jobs=jobs, store=store, scripts=scripts or ScriptCatalog(), policy=policy,
            upload_mode=upload_mode, upload_origin=store.origin, links=access.links, audit=access.audit)
        uploads = UploadPolicy(max_upload_bytes=max_bytes)

        async def sign(key: str, content_type: str, size: int, expires: int):
            from shared.aws.storage import Storage

            return await Storage(clients.s3, common.bucket).presigned_post(key, content_type, size, expires)

        app = create_app(uploads, jobs, sign,
                         IngestAccess(access.authenticator, access.audit, access.limiter, access.links,
                                      CheckinLimits(checkins_per_window=1000)),
                         patient_page=PatientPage(router, *open_paths(), body_limits(policy)),
                         recording_arrived=store.exists,
                         proxy=UploadProxy(store, part_bytes, upload_stale_seconds) if upload_mode == "proxy" else None)
        yield IngestSite(app, access, jobs, store, issuer)


def update_job(settings: CommonSettings, job_id: str, **fields: Any) -> None:
    """Move a check-in on as the pipeline would (its status, progress, results), for the page to follow."""
    from shared.aws.dynamo import to_item

    names = {f"#{k}": k for k in fields}
    sync_client(settings, "dynamodb").update_item(
        TableName=settings.jobs_table, Key={"job_id": {"S": job_id}},
        UpdateExpression="SET " + ", ".join(f"#{k} = :{k}" for k in fields), ExpressionAttributeNames=names,
        ExpressionAttributeValues={f":{k}": v for k, v in to_item(fields).items()})
