"""What the HTTP APIs (ingest, results) share: 422s a person can read, and serving
inside a stage process. (The job status they serve is `shared.job.JobStatus`.)"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from shared.errors import ConfigurationError

log = structlog.get_logger()
LISTEN_FD_VARIABLE = "SCHIZODOT_LISTEN_FD"

# Said in words instead of echoing a regular expression.
FIELD_RULES = {
    "patient_id": "must be 3 to 100 letters, digits, '_' or '-'",
    "job_id": "must look like job-<12 hexadecimal digits>",
}
_LOCATIONS = ("body", "query", "path", "header")


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
