"""The FastAPI side of authentication: the middleware that authenticates every request before routing,
the request id, and the dependencies routes use (`principal_dependency`, `allow`).

Every failure is the same 401 `{"detail": "authentication required"}`: the reason goes to the log
(never the token), not to the caller. Authentication runs before routing, so without a credential
every path, existing or not, answers the same; a role a route does not allow is the one 403.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any
from urllib.parse import quote

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse

from shared.identity.audit import request_id_var
from shared.identity.auth import SAFE_METHODS, Authenticator
from shared.identity.errors import AuthenticationFailed, AuthenticationUnavailable, SessionEnded
from shared.identity.principal import Principal, Role

log = structlog.get_logger()

UNAUTHENTICATED = {"detail": "authentication required"}
CHALLENGE = {"WWW-Authenticate": "Bearer"}
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")



def unauthenticated_response() -> JSONResponse:
    return JSONResponse(status_code=401, content=UNAUTHENTICATED, headers=CHALLENGE)


def install_authentication(app: FastAPI, authenticator: Authenticator, *, open_paths: Iterable[str] = OPEN_PATHS,
                           open_prefixes: Iterable[str] = (), login_pages: dict[str, str] | None = None) -> None:
    """Every path but the open ones needs a credential, checked before routing and validation,
    so a caller without one learns nothing (not even whether a route or a job exists).
    Also gives each request an id (`X-Request-ID`, kept if the caller sent a well-formed one).

    `login_pages` ({path prefix: sign-in page}): a browser asking for a page under the prefix
    without a valid credential is sent to the sign-in page instead of a 401 (the same answer
    for every path under it, existing or not)."""
    exact, prefixes = frozenset(open_paths), tuple(open_prefixes)
    logins = dict(login_pages or {})

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(12)
        token = request_id_var.set(request_id)
        try:
            path = request.url.path
            if not (path in exact or (prefixes and path.startswith(prefixes))):
                try:
                    request.state.principal = await authenticator.authenticate(request)
                except AuthenticationFailed as error:
                    log.info("request not authenticated", reason=str(error), path=_route_shape(app, path))
                    login = next((page for prefix, page in logins.items() if path.startswith(prefix)), None)
                    if login and request.method in SAFE_METHODS and "text/html" in request.headers.get("accept", ""):
                        ended = f"&ended={error.why}" if isinstance(error, SessionEnded) else ""
                        response = RedirectResponse(f"{login}?next={quote(path, safe='/')}{ended}", status_code=303)
                        response.headers["X-Request-ID"] = request_id
                        return response
                    response = unauthenticated_response()
                    response.headers["X-Request-ID"] = request_id
                    return response
                except AuthenticationUnavailable as error:
                    log.error("credential could not be checked", error=str(error))
                    return JSONResponse(status_code=503, content={"detail": "authentication is unavailable; try again"},
                                        headers={"Retry-After": "5", "X-Request-ID": request_id})
            response = await call_next(request)
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            request_id_var.reset(token)


def _route_shape(app: FastAPI, path: str) -> str:
    """A path for the log with every segment that is not a word of the app's own routes
    (`/api/v1/patients/{patient_id}/results` gives api, v1, patients, results) replaced: a
    patient id may have any shape, all letters included (PHI)."""
    words = getattr(app.state, "route_words", None)
    if words is None:  # the routes are all declared by the first request
        words = app.state.route_words = frozenset(_static_segments(app.router.routes))
    return "/".join(part if not part or part in words else "…" for part in path.split("/"))


def _static_segments(routes: Iterable[Any]) -> Iterable[str]:
    for route in routes:
        for template in (getattr(route, "path", None),
                         getattr(getattr(route, "include_context", None), "prefix", None)):
            if isinstance(template, str):
                yield from (part for part in template.split("/") if part and "{" not in part)
        nested = getattr(getattr(route, "original_router", route), "routes", None)  # included routers, mounts
        if isinstance(nested, list):
            yield from _static_segments(nested)


def principal_dependency(authenticator: Authenticator) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency returning the caller's `Principal` (401 without a valid credential).

    Behind `install_authentication` it returns what the middleware found; mounted
    elsewhere it authenticates the request itself."""

    async def principal(request: Request) -> Principal:
        found = getattr(request.state, "principal", None)
        if isinstance(found, Principal):
            return found
        try:
            found = await authenticator.authenticate(request)
        except AuthenticationFailed as error:
            raise HTTPException(status_code=401, detail=UNAUTHENTICATED["detail"], headers=CHALLENGE) from error
        except AuthenticationUnavailable as error:
            raise HTTPException(status_code=503, detail="authentication is unavailable; try again",
                                headers={"Retry-After": "5"}) from error
        request.state.principal = found
        return found

    return principal


FORBIDDEN = "your role may not call this route"


def allow(principal: Callable[..., Awaitable[Principal]], *roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if its role may call the route; 403 otherwise (the only 403)."""
    from fastapi import Depends

    allowed = frozenset(roles)

    async def check(who: Principal = Depends(principal)) -> Principal:
        if who.role not in allowed:
            raise HTTPException(status_code=403, detail=FORBIDDEN)
        return who

    return check
