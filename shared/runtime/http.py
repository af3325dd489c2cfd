"""What the HTTP APIs (ingest, results) share: 422s a person can read, a limit on
request bodies, and serving inside a stage process. (The job status they serve is
`shared.domain.job.JobStatus`.)"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Mapping
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shared.domain.errors import ConfigurationError

log = structlog.get_logger()
LISTEN_FD_VARIABLE = "SCHIZODOT_LISTEN_FD"

# Said in words instead of echoing a regular expression.
FIELD_RULES = {
    "patient_id": "must be 3 to 100 letters, digits, '_' or '-'",
    "job_id": "must look like job-<32 hexadecimal digits>",
}
_LOCATIONS = ("body", "query", "path", "header")

# Request bodies: forms and JSON (the console's sign-in and forms, check-ins, patient links,
# API keys) are small; an EHR's CloudEvent may carry metadata and a timeline. Media never
# pass through the APIs (they go to S3 with presigned requests).
FORM_AND_JSON_BYTES = 64 * 1024
EVENT_BYTES = 1024 * 1024


def _unavailable(error: Exception) -> bool:
    """A failure of the AWS API that outlasted botocore's own retries: the
    store is unreachable or throttling, not the request wrong."""
    from botocore.exceptions import ClientError, ConnectionError, HTTPClientError

    if isinstance(error, (ConnectionError, HTTPClientError)):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        return status >= 500 or "Throttl" in code or code in ("ProvisionedThroughputExceededException",
                                                             "RequestThrottled", "SlowDown", "RequestLimitExceeded")
    return False


def install_unavailable_dependency_errors(app: FastAPI, retry_after_seconds: int = 2) -> None:
    """503 with Retry-After, not 500, when the AWS API behind a route is away
    (restarting, throttling): clients retry a 503; a 500 says the request is at fault."""

    async def unavailable(_request: Request, error: Exception) -> JSONResponse:
        if not _unavailable(error):
            raise error
        log.warning("AWS API unavailable; answered 503", error=type(error).__name__)
        return JSONResponse(status_code=503, headers={"Retry-After": str(retry_after_seconds)},
                            content={"detail": "the service's data store is unavailable for a moment; retry shortly"})

    from botocore.exceptions import BotoCoreError, ClientError

    app.add_exception_handler(BotoCoreError, unavailable)
    app.add_exception_handler(ClientError, unavailable)


class _BodyTooLarge(Exception):
    pass


class RequestBodyLimit:
    """ASGI middleware: a request whose body is larger than its route's limit gets 413, refused
    by its `Content-Length` before anything is read, or, without one (chunked), as soon as the
    bytes received pass the limit. The server never holds more than the limit and one chunk,
    so a client that needs no credential (`/console/login`) cannot make the process grow.

    `limits`: {path prefix: bytes}, the longest matching prefix wins; `default_bytes` elsewhere.
    """

    def __init__(self, app: Any, *, default_bytes: int = FORM_AND_JSON_BYTES,
                 limits: Mapping[str, int] | None = None) -> None:
        self.app = app
        self.default_bytes = default_bytes
        self.limits = sorted((limits or {}).items(), key=lambda item: -len(item[0]))

    def limit_for(self, path: str) -> int:
        return next((size for prefix, size in self.limits if path.startswith(prefix)), self.default_bytes)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _refuse(send, limit)
            return
        received, refused, started = 0, False, False

        async def limited_receive() -> dict[str, Any]:
            nonlocal received, refused
            if refused:
                raise _BodyTooLarge()
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    raise _BodyTooLarge()
            return message

        async def guarded_send(message: dict[str, Any]) -> None:
            nonlocal started
            if refused:
                return  # whatever the app made of the cut body (FastAPI: a 400): the 413 goes instead
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:  # noqa: BLE001 - _BodyTooLarge, possibly wrapped by the app's task groups
            if not refused:
                raise
        if refused and not started:
            await _refuse(send, limit)


async def _refuse(send: Any, limit: int) -> None:
    body = json.dumps({"detail": f"the request body is larger than this route accepts ({limit} bytes)"}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def install_request_body_limit(app: FastAPI, *, default_bytes: int = FORM_AND_JSON_BYTES,
                               limits: Mapping[str, int] | None = None) -> None:
    """The body limit, outermost: installed last, it runs before every other middleware."""
    app.add_middleware(RequestBodyLimit, default_bytes=default_bytes, limits=limits)


def install_readable_validation_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            parts = [str(part) for part in item["loc"] if part not in _LOCATIONS]
            field = ".".join(parts) or "request"
            rule = FIELD_RULES.get(parts[-1]) if parts and item["type"] == "string_pattern_mismatch" else None
            problems.append(f"{field}: {rule or item['msg'].removeprefix('Value error, ')}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems)})


async def serve_http(app: FastAPI, host: str, port: int, stop: asyncio.Event, *, port_setting: str,
                     required: bool) -> None:
    """Serve `app` inside a stage process until `stop` is set.

    The socket is bound here rather than by uvicorn, which would exit the whole
    process when the port is taken: a stage whose API is optional (results) goes
    on with its queue work; one whose API is its purpose (ingest) fails with the
    setting to fix. Under the embedded stack's supervisor the socket is
    inherited instead (SCHIZODOT_LISTEN_FD): every process of the stage accepts
    on the one socket the supervisor holds, so the API keeps answering while
    one of them restarts.
    """
    try:
        inherited = os.environ.get(LISTEN_FD_VARIABLE)
        sock = socket.socket(fileno=int(inherited)) if inherited else socket.create_server((host, port))
    except OSError as error:
        if required:
            raise ConfigurationError(
                f"cannot listen on {host}:{port} ({error}); set {port_setting} to a free port", port_setting
            ) from error
        log.error("API not started; the worker goes on with its queue", host=host, port=port, error=str(error),
                  fix=f"set {port_setting} to a free port")
        return
    install_unavailable_dependency_errors(app)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    server.capture_signals = contextlib.nullcontext  # the stage runner owns signals
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    log.info("API listening", host=host, port=sock.getsockname()[1])
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopping.cancel()
    await serving
