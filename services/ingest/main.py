"""Ingest worker: the check-in API and the ingest queue consumer in one process."""

from __future__ import annotations

import asyncio
import contextlib
import functools

import uvicorn

from services.ingest.api import create_app
from services.ingest.handlers import IngestDeps, handle_ingest_message
from services.ingest.settings import IngestSettings
from shared.worker import StageContext, run_stage


def build_handler(context: StageContext):
    deps = IngestDeps(context.settings, context.jobs, context.storage, context.publisher)
    return functools.partial(handle_ingest_message, deps=deps)


async def serve_api(context: StageContext, stop: asyncio.Event) -> None:
    settings: IngestSettings = context.settings  # type: ignore[assignment]
    app = create_app(settings, context.jobs, context.storage)
    server = uvicorn.Server(
        uvicorn.Config(app, host=settings.api_host, port=settings.api_port, log_config=None, access_log=False)
    )
    server.capture_signals = contextlib.nullcontext  # the stage runner owns signals
    serving = asyncio.create_task(server.serve())
    await stop.wait()
    server.should_exit = True
    await serving


def main() -> None:
    run_stage(IngestSettings(), "ingest", build_handler, side_tasks=(serve_api,))


if __name__ == "__main__":
    main()
