"""The clinician console: server-rendered pages, plots, exports and alert acknowledgement.

`create_console_router` returns a router the results service mounts (its
composition root, services/results/main.py). It only composes: the routes are
top-level functions in sign_in.py, pages.py and review_pages.py, and reach the
console's state (`context.Console`, bound to each request here) through FastAPI
dependencies. Every route but the sign-in page and the static files:

1. asks `principal` (shared.identity.auth: a bearer token, or the session cookie on the
   console's paths; 401 without a valid one) who is calling; roles other than
   clinician and clinic_admin get the one 403 (`shared.identity.middleware.allow`);
2. scopes to the principal's clinic: patients are read under the clinic's patient
   key (shared.identity.principal), and a patient not on the clinic's roster, or a check-in of
   another clinic, is "not found" in exactly the words and status of one that does
   not exist;
3. records an audit event (shared.identity.audit) before serving anything; a failing audit
   fails the request (503).

Pages are HTML with every script, style and font served here (plotly.js from
the plotly wheel); free text is escaped by Jinja's autoescaping, figures travel
as JSON. The video and evidence frames are 303 redirects to presigned GETs
that live `media_url_seconds`. Times are the clinic's, with the zone shown.
POSTs (acknowledge) need the form's CSRF token when the caller came by cookie
(sessions.py) and are refused unless they come from this site (Origin and
Sec-Fetch-Site).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.results import dosing
from services.results.alerts import AlertStore, Roster
from services.results.console import pages, review_pages, sign_in, views
from services.results.console.context import Console
from services.results.console.oidc import OidcSignIn
from services.results.console.ports import MediaLinks
from services.results.console.sessions import ConsoleSessions
from shared.aws.history import HistoryReader
from shared.aws.jobs import JobStore
from shared.domain.clinics import ClinicDirectory
from shared.domain.stored_results import MEDICATION_WORDS
from shared.identity.audit import AuditTrail
from shared.identity.principal import Principal

HERE = pages.HERE


def open_paths(prefix: str = "/console") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paths, prefixes) of the console served without a credential: sign-in and static files."""
    return tuple(prefix + suffix for suffix in sign_in.OPEN_SUFFIXES), (f"{prefix}/static/",)


def create_console_router(
    *,
    principal: Callable[[Request], Awaitable[Principal]],
    jobs: JobStore,
    history: HistoryReader,
    roster: Roster,
    alerts: AlertStore,
    media: MediaLinks,
    audit: AuditTrail,
    clinics: ClinicDirectory,
    sessions: ConsoleSessions | None = None,
    oidc: OidcSignIn | None = None,
    public_url: str | None = None,  # the console's public address (the provider's redirect URI is under it)
    prefix: str = "/console",
    media_url_seconds: int = 120,
    history_limit: int = 100,
    clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    reviews: dosing.DosingReviews | None = None,
) -> APIRouter:
    console = Console(principal=principal, jobs=jobs, history=history, roster=roster, alerts=alerts, media=media,
                      audit=audit, clinics=clinics, sessions=sessions, oidc=oidc, public_url=public_url,
                      prefix=prefix, media_url_seconds=media_url_seconds, history_limit=history_limit, clock=clock,
                      reviews=reviews, templates=_templates(prefix), headers=_headers(media.origin),
                      login_headers=_login_headers(media.origin))

    async def bind(request: Request) -> None:  # runs before each route's own dependencies (context.console_of)
        request.state.console = console

    router = APIRouter(prefix=prefix, include_in_schema=False, dependencies=[Depends(bind)])
    router.include_router(sign_in.router)
    router.include_router(pages.router)
    if reviews is not None:
        router.include_router(review_pages.router)
    return router


def _templates(prefix: str) -> Environment:
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.globals.update(prefix=prefix, MEDICATION_WORDS=MEDICATION_WORDS)
    env.filters["local"] = lambda value, zone: views.local_time(value, zone)
    env.filters["q"] = lambda value: quote(str(value), safe="")
    return env


def _headers(media_origin: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob: {media_origin}; media-src 'self' {media_origin}; connect-src 'self'; "
            "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"),
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }


def _login_headers(media_origin: str) -> dict[str, str]:
    return {**_headers(media_origin), "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")}


__all__ = ["create_console_router", "open_paths"]
