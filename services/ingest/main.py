"""Ingest worker: the check-in API and the ingest queue consumer in one process."""

from __future__ import annotations

import asyncio

from services.ingest.api import IngestAccess, PostSigner, create_app
from services.ingest.handlers import INGEST, IngestDeps
from services.ingest.settings import IngestSettings
from shared.access import build_access
from shared.aws import sync_client
from shared.http import serve_http
from shared.settings import CommonSettings
from shared.storage import ObjectStore, sign_post
from shared.worker import StageContext, run_stage


def build_deps(context: StageContext[IngestSettings]) -> IngestDeps:
    return IngestDeps(context.settings.uploads, context.storage)


def build_upload_signer(settings: IngestSettings, common: CommonSettings, storage: ObjectStore) -> PostSigner:
    if not settings.public_s3_endpoint_url:
        return storage.presigned_post
    # Signing is local computation: a client aimed at the public endpoint signs
    # forms the uploader can reach.
    public = sync_client(common.model_copy(update={"aws_endpoint_url": settings.public_s3_endpoint_url}), "s3")

    async def sign(key: str, content_type: str, max_bytes: int, expires: int):
        return await sign_post(public, common.bucket, key, content_type, max_bytes, expires)

    return sign


async def serve_api(context: StageContext[IngestSettings], stop: asyncio.Event) -> None:
    settings = context.settings
    access = build_access(context.common, context.aws, service="schizodot-ingest")
    ingest_queue = context.queue_urls["ingest"]

    async def enqueue_event(body: str) -> str:
        return (await context.aws.sqs.send_message(QueueUrl=ingest_queue, MessageBody=body))["MessageId"]

    app = create_app(settings.uploads, context.jobs, build_upload_signer(settings, context.common, context.storage),
                     IngestAccess(access.authenticator, access.audit, access.limiter, access.links, settings.limits),
                     enqueue_event)
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="INGEST_API_PORT", required=True)


def main() -> None:
    run_stage(INGEST, IngestSettings(), build_deps, side_tasks=(serve_api,))


if __name__ == "__main__":
    main()
