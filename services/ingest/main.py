"""Ingest worker: the check-in API and the ingest queue consumer in one process."""

from __future__ import annotations

import asyncio

from services.ingest.api import UploadSigner, create_app
from services.ingest.handlers import INGEST, IngestDeps
from services.ingest.settings import IngestSettings
from shared.aws import sync_client
from shared.http import serve_http
from shared.settings import CommonSettings
from shared.storage import ObjectStore
from shared.worker import StageContext, run_stage


def build_deps(context: StageContext[IngestSettings]) -> IngestDeps:
    return IngestDeps(context.settings.uploads, context.storage)


def build_upload_signer(settings: IngestSettings, common: CommonSettings, storage: ObjectStore) -> UploadSigner:
    if not settings.public_s3_endpoint_url:
        return storage.presigned_upload
    # Signing is local computation: a client aimed at the public endpoint signs
    # URLs the uploader can reach.
    public = sync_client(common.model_copy(update={"aws_endpoint_url": settings.public_s3_endpoint_url}), "s3")

    async def sign(key: str, content_type: str, expires: int) -> str:
        return public.generate_presigned_url(
            "put_object",
            Params={"Bucket": common.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires,
        )

    return sign


async def serve_api(context: StageContext[IngestSettings], stop: asyncio.Event) -> None:
    settings = context.settings
    app = create_app(settings.uploads, context.jobs, build_upload_signer(settings, context.common, context.storage))
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="INGEST_API_PORT", required=True)


def main() -> None:
    run_stage(INGEST, IngestSettings(), build_deps, side_tasks=(serve_api,))


if __name__ == "__main__":
    main()
