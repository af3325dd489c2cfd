"""What every console route shares: the console's state, who is calling, pages, audit and clinic scoping.

`Console` is the console's state (stores, clinic directory, sessions, templates, headers),
built once by `create_console_router` and bound to each request by the router's
dependency; routes reach it with `Depends(console_of)` and the signed-in clinician with
`Depends(caller)`. Its methods are the rules every page follows: a patient not on the
clinic's roster, or a check-in of another clinic, is `NotFound` (answered like a missing
one, and recorded), and every read is audited before anything is served.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment

from services.results import dosing
from services.results.alerts import AlertStore, Roster
from services.results.console.oidc import OidcSignIn
from services.results.console.ports import AuditEvent, MediaLinks
from services.results.console.sessions import ConsoleSessions
from shared.aws.history import HistoryReader
from shared.aws.jobs import JobStore
from shared.domain.checkin import JOB_ID_PATTERN, PATIENT_ID_PATTERN
from shared.domain.clinics import ClinicDirectory, ClinicProfile
from shared.domain.findings import ResultItem
from shared.domain.patients import ClinicPatientId, PatientKey
from shared.domain.stored_results import stored_result
from shared.identity.audit import AuditTrail
from shared.identity.middleware import allow
from shared.identity.principal import Principal, Role

CONSOLE_ROLES = (Role.CLINICIAN, Role.CLINIC_ADMIN)
_PATIENT = re.compile(PATIENT_ID_PATTERN)


class NotFound(Exception):
    pass


@dataclass
class Caller:
    principal: Principal
    clinic_id: str
    clinic: ClinicProfile
    csrf: str = ""  # the token its forms carry (sessions.py)

    def key_of(self, patient_id: ClinicPatientId | str) -> PatientKey:
        """The stored key of this clinic's patient `patient_id` (its clinic-local id, as the URL has it)."""
        return self.principal.key_of(patient_id)


@dataclass(frozen=True)
class Console:
    principal: Callable[[Request], Awaitable[Principal]]  # shared.identity.middleware.principal_dependency
    jobs: JobStore
    history: HistoryReader
    roster: Roster
    alerts: AlertStore
    media: MediaLinks
    audit: AuditTrail
    clinics: ClinicDirectory
    sessions: ConsoleSessions | None
    oidc: OidcSignIn | None
    public_url: str | None  # the console's public address (the provider's redirect URI is under it)
    prefix: str
    media_url_seconds: int
    history_limit: int
    clock: Callable[[], datetime]
    reviews: dosing.DosingReviews | None
    templates: Environment
    headers: dict[str, str]  # every page's (CSP, no-store, ...)
    login_headers: dict[str, str]  # the sign-in pages' (a stricter CSP)

    def page(self, name: str, c: Caller, status: int = 200, **context: Any) -> HTMLResponse:
        body = self.templates.get_template(name).render(
            clinic=c.clinic, clinic_id=c.clinic_id, zone=c.clinic.zone,
            zone_now=self.clock().astimezone(c.clinic.zone).strftime("%Z"),
            user=c.principal.display_name or c.principal.subject, csrf=c.csrf, signed_in_by_cookie=bool(c.csrf),
            admin=c.principal.role is Role.CLINIC_ADMIN, **context)
        return HTMLResponse(body, status_code=status, headers=self.headers)

    def not_found(self, c: Caller) -> HTMLResponse:
        return self.page("not_found.html", c, status=404)

    async def record(self, c: Caller, action: str, outcome: str = "success", **fields: Any) -> None:
        await self.audit.record(AuditEvent(action=action, principal=c.principal, outcome=outcome, **fields))

    async def patient_of(self, c: Caller, patient_id: str, action: str) -> ClinicPatientId:
        """The patient of the URL as the clinic's own id; NotFound (recorded) unless it is on the caller's
        clinic's roster."""
        patient = ClinicPatientId(patient_id) if _PATIENT.match(patient_id) else None
        if patient is None or await self.roster.get(c.clinic_id, patient) is None:
            await self.record(c, action, "not_found", patient_id=patient)
            raise NotFound()
        return patient

    async def clinic_history(self, c: Caller, patient_id: ClinicPatientId, limit: int) -> list[ResultItem]:
        """The patient's newest results in the caller's clinic, newest first, each parsed as it is read."""
        found = map(stored_result, await self.history.latest(c.key_of(patient_id), limit))
        return [item for item in found if item.clinic_id == c.clinic_id]

    async def checkin_of(self, c: Caller, patient_id: str, job_id: str, action: str) -> ResultItem:
        """The check-in `job_id` of the patient of the URL (`item.patient`, as `patient_of` checks it);
        NotFound (recorded) for one of another clinic, or none."""
        patient = await self.patient_of(c, patient_id, action)
        found = await self.history.for_job(c.key_of(patient), job_id) if JOB_ID_PATTERN.match(job_id) else None
        item = stored_result(found) if found is not None else None
        if item is None or item.clinic_id != c.clinic_id:
            await self.record(c, action, "not_found", patient_id=patient)
            raise NotFound()
        return item

    def local_path(self, path: str) -> str:
        """`path` if it is a page of the console (never another site: no open redirect), else ''."""
        parts = urlsplit(path)
        if parts.scheme or parts.netloc or not parts.path.startswith(self.prefix + "/") or "\\" in path:
            return ""
        return parts.path + (f"?{parts.query}" if parts.query else "")


def console_of(request: Request) -> Console:
    """The console serving this request (bound by `create_console_router`'s router)."""
    return request.state.console


async def principal(request: Request, console: Console = Depends(console_of)) -> Principal:
    """Who is calling (401 without a valid credential)."""
    return await console.principal(request)


async def caller(request: Request, who: Principal = Depends(allow(principal, *CONSOLE_ROLES)),
                 console: Console = Depends(console_of)) -> Caller:
    """The signed-in clinician or clinic admin (the one 403 for other roles: `allow`), in their clinic."""
    assert who.clinic_id is not None  # clinicians and clinic admins belong to a clinic
    return Caller(who, who.clinic_id, console.clinics.get(who.clinic_id),
                  console.sessions.csrf_token(request) if console.sessions else "")


def same_site(request: Request) -> None:
    """403 unless a form post comes from this site (Sec-Fetch-Site and Origin)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(status_code=403, detail="cross-site requests are refused")
    origin = request.headers.get("origin")
    # A page under `Referrer-Policy: no-referrer` posts `Origin: null`; then only the browser's
    # own Sec-Fetch-Site may vouch for it.
    if origin == "null" and site != "same-origin":
        raise HTTPException(status_code=403, detail="cross-site requests are refused")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(status_code=403, detail="cross-site requests are refused")
