"""Ingest worker: the check-in API, the patient page and the ingest queue consumer in one process."""

from __future__ import annotations

import asyncio
from typing import Any

from services.ingest.api import IngestAccess, PatientPage, PostSigner, UploadProxy, create_app
from services.ingest.handlers import INGEST, IngestDeps
from services.ingest.patient import (
    MultipartPolicy,
    S3MultipartStore,
    ScriptCatalog,
    body_limits,
    create_patient_router,
    open_paths,
)
from services.ingest.settings import IngestSettings
from shared.aws.clients import sync_client
from shared.aws.storage import ObjectStore, sign_post
from shared.identity.access import Access, build_access
from shared.runtime.http import serve_http
from shared.runtime.worker import StageContext, run_stage
from shared.settings import CommonSettings


def build_deps(context: StageContext[IngestSettings]) -> IngestDeps:
    return IngestDeps(context.settings.uploads, context.storage)


def public_signer(settings: IngestSettings, common: CommonSettings) -> Any:
    """A client that signs URLs the uploader can reach. Signing is local computation: aimed at the
    public endpoint (compose: the host's http://localhost:4566, not http://moto:4566), it signs for it."""
    if not settings.public_s3_endpoint_url:
        return sync_client(common, "s3")
    return sync_client(common.model_copy(update={"aws_endpoint_url": settings.public_s3_endpoint_url}), "s3")


def build_upload_signer(settings: IngestSettings, common: CommonSettings, storage: ObjectStore) -> PostSigner:
    if not settings.public_s3_endpoint_url:
        return storage.presigned_post
    public = public_signer(settings, common)

    async def sign(key: str, content_type: str, max_bytes: int, expires: int):
        return await sign_post(public, common.bucket, key, content_type, max_bytes, expires)

    return sign


def build_patient_page(context: StageContext[IngestSettings], access: Access) -> tuple[PatientPage, S3MultipartStore]:
    settings, common = context.settings, context.common
    store = S3MultipartStore(context.aws.s3, public_signer(settings, common), common.bucket)
    scripts = ScriptCatalog.from_file(common.clinics_file) if common.clinics_file else ScriptCatalog()
    policy = MultipartPolicy(max_bytes=settings.uploads.max_upload_bytes, part_bytes=settings.patient_part_bytes,
                             url_expiry_seconds=settings.uploads.upload_url_expiry_seconds)
    router = create_patient_router(
        principal=access.principal, jobs=context.jobs, store=store, scripts=scripts, policy=policy,
        upload_mode=settings.upload_mode, upload_origin=store.origin if settings.upload_mode == "presigned" else None,
        links=access.links, audit=access.audit)
    paths, prefixes = open_paths()
    return PatientPage(router, paths, prefixes, body_limits(policy)), store


async def serve_api(context: StageContext[IngestSettings], stop: asyncio.Event) -> None:
    settings = context.settings
    access = build_access(context.common, context.aws, service="schizodot-ingest", auth=settings.auth)
    ingest_queue = context.queue_urls["ingest"]

    async def enqueue_event(body: str) -> str:
        return (await context.aws.sqs.send_message(QueueUrl=ingest_queue, MessageBody=body))["MessageId"]

    page, store = build_patient_page(context, access)
    app = create_app(settings.uploads, context.jobs, build_upload_signer(settings, context.common, context.storage),
                     IngestAccess(access.authenticator, access.audit, access.limiter, access.links, settings.limits),
                     enqueue_event, patient_page=page, recording_arrived=store.exists,
                     proxy=UploadProxy(store, settings.patient_part_bytes, settings.upload_stale_seconds)
                     if settings.upload_mode == "proxy" else None)
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="INGEST_API_PORT", required=True)


def main() -> None:
    run_stage(INGEST, IngestSettings(), build_deps, side_tasks=(serve_api,))


if __name__ == "__main__":
    main()
