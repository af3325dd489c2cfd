"""Ingest worker: the check-in API and the ingest queue consumer in one process."""

from __future__ import annotations

import asyncio
import functools


from services.ingest.api import UploadSigner, create_app
from services.ingest.handlers import IngestDeps, handle_ingest_message
from services.ingest.settings import IngestSettings
from shared.aws import sync_client
from shared.http import serve_http
from shared.worker import StageContext, run_stage


def build_handler(context: StageContext):
    deps = IngestDeps(context.settings, context.jobs, context.storage, context.publisher)
    return functools.partial(handle_ingest_message, deps=deps)


def build_upload_signer(context: StageContext) -> UploadSigner:
    settings: IngestSettings = context.settings  # type: ignore[assignment]
    if not settings.public_s3_endpoint_url:
        return context.storage.presigned_upload
    # Signing is local computation: a client aimed at the public endpoint signs
    # URLs the uploader can reach.
    public = sync_client(settings.model_copy(update={"aws_endpoint_url": settings.public_s3_endpoint_url}), "s3")

    async def sign(key: str, content_type: str, expires: int) -> str:
        return public.generate_presigned_url(
            "put_object",
            Params={"Bucket": settings.bucket, "Key": key, "ContentType": content_type},
            ExpiresIn=expires,
        )

    return sign


async def serve_api(context: StageContext, stop: asyncio.Event) -> None:
    settings: IngestSettings = context.settings  # type: ignore[assignment]
    app = create_app(settings, context.jobs, build_upload_signer(context))
    await serve_http(app, settings.api_host, settings.api_port, stop, port_setting="INGEST_API_PORT", required=True)


def main() -> None:
    run_stage(IngestSettings(), "ingest", build_handler, side_tasks=(serve_api,))


if __name__ == "__main__":
    main()
