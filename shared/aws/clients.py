"""AWS clients, made one way for every service, the CLI and the tests.

`AWS_ENDPOINT_URL` set means a local AWS-API server (the embedded moto server,
moto's or LocalStack's container); unset means real AWS.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any

import boto3
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.config import Config

from shared.settings import CommonSettings


def retry_config(settings: CommonSettings) -> dict[str, Any]:
    """botocore's retry mode (`standard`, or `adaptive` which also slows the
    client down on throttling) and total attempts, the same for every client."""
    return {"mode": settings.aws_retry_mode, "total_max_attempts": settings.aws_max_attempts}


def _client_options(settings: CommonSettings) -> dict[str, Any]:
    options: dict[str, Any] = {"region_name": settings.aws_region}
    if settings.aws_endpoint_url:
        options["endpoint_url"] = settings.aws_endpoint_url
    return options


def _s3_style(settings: CommonSettings) -> dict[str, str]:
    # Local servers on 127.0.0.1 cannot serve bucket-named hosts.
    return {"addressing_style": "path" if settings.aws_endpoint_url else "auto"}


def sync_client(settings: CommonSettings, service: str):
    config = Config(retries=retry_config(settings), s3=_s3_style(settings), signature_version="s3v4" if service == "s3" else None)
    return boto3.session.Session().client(service, config=config, **_client_options(settings))


def async_client(settings: CommonSettings, service: str) -> Any:
    """One more async client (e.g. SNS), configured as the others; an async context manager."""
    return get_session().create_client(service, config=AioConfig(retries=retry_config(settings)),
                                       **_client_options(settings))


class AsyncClients:
    """The async SQS, DynamoDB and S3 clients of one worker process, opened together."""

    def __init__(self, settings: CommonSettings, max_pool_connections: int = 50) -> None:
        self._settings = settings
        self._stack = AsyncExitStack()
        self._pool = max_pool_connections
        self.sqs: Any = None
        self.dynamodb: Any = None
        self.s3: Any = None

    async def __aenter__(self) -> "AsyncClients":
        session = get_session()
        options = _client_options(self._settings)
        base = AioConfig(retries=retry_config(self._settings), max_pool_connections=self._pool)
        self.sqs = await self._stack.enter_async_context(
            session.create_client("sqs", config=base, **options)
        )
        self.dynamodb = await self._stack.enter_async_context(
            session.create_client("dynamodb", config=base, **options)
        )
        self.s3 = await self._stack.enter_async_context(
            session.create_client(
                "s3",
                config=base.merge(AioConfig(s3=_s3_style(self._settings), signature_version="s3v4")),
                **options,
            )
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()
