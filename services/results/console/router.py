"""The clinician console: server-rendered pages, plots, exports and alert acknowledgement.

`create_console_router` returns a router the results service mounts (its
composition root, services/results/main.py); it keeps no state of its own. Every
route but the sign-in page and the static files:

1. asks `principal` (shared.auth: a bearer token, or the session cookie on the
   console's paths; 401 without a valid one) who is calling; roles other than
   clinician and clinic_admin get the one 403 (`shared.auth.allow`);
2. scopes to the principal's clinic: patients are read under the clinic's patient
   key (shared.identity), and a patient not on the clinic's roster, or a check-in of
   another clinic, is "not found" in exactly the words and status of one that does
   not exist;
3. records an audit event (shared.audit) before serving anything; a failing audit
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

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import plotly
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.concurrency import run_in_threadpool

from services.results.alerts.clinics import ClinicDirectory, ClinicProfile
from services.results.alerts.findings import MEDICATION_WORDS, checkin_time, clinic_of, fmt_local
from services.results.alerts.roster import Roster
from services.results.alerts.store import NOTE_MAX, AlertStore, AlreadyAcknowledged
from services.results import adherence, dosing
from services.results.console import exports, plots, review_pages, series, views
from services.results.console.ports import AuditEvent, MediaLinks
from services.results.console.oidc import OidcSignIn, SignInRefused
from services.results.console.sessions import LOGIN_SECONDS, ConsoleSessions, https
from shared.audit import AuditTrail
from shared.auth import FORBIDDEN, allow
from shared.domain import JOB_ID_PATTERN, PATIENT_ID_PATTERN, artifacts_prefix
from shared.history import HistoryReader
from shared.identity import Principal, Role, is_clinic_id
from shared.job import Job
from shared.jobs import JobStore

HERE = Path(__file__).resolve().parent
CONSOLE_ROLES = (Role.CLINICIAN, Role.CLINIC_ADMIN)
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
STATIC = {
    "console.css": (HERE / "static" / "console.css", "text/css; charset=utf-8"),
    "review.js": (HERE / "static" / "review.js", "text/javascript; charset=utf-8"),
    "console.js": (HERE / "static" / "console.js", "text/javascript; charset=utf-8"),
    "login.js": (HERE / "static" / "login.js", "text/javascript; charset=utf-8"),
    "plotly.min.js": (PLOTLY_JS, "text/javascript; charset=utf-8"),
}
# Served without a credential (they hold no PHI): the results app opens them in shared.auth.
OPEN_SUFFIXES = ("/login", "/logout", "/login/oidc", "/login/callback")
# Why the sign-in page is shown (`?ended=`): the session ended (sessions.py).
ENDED = {
    "idle": "You were signed out after {minutes} minutes without activity, to protect patients' data. "
            "Sign in again to go on.",
    "expired": "Your session reached its {hours}-hour limit. Sign in again to go on.",
    "revoked": "Your clinic's administrator ended your sessions. Sign in again to go on.",
    "signed_out": "You are signed out.",
}
_PATIENT = re.compile(PATIENT_ID_PATTERN)
_STEP = re.compile(r"^[a-z_]{1,40}$")
LIST_CONCURRENCY = 16  # history reads at once for the patient list (one query per patient)


class NotFound(Exception):
    pass


@dataclass
class Caller:
    principal: Principal
    clinic_id: str
    clinic: ClinicProfile
    csrf: str = ""  # the token its forms carry (sessions.py)

    def key_of(self, patient_id: str) -> str:
        return self.principal.key_of(patient_id)


def open_paths(prefix: str = "/console") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paths, prefixes) of the console served without a credential: sign-in and static files."""
    return tuple(prefix + suffix for suffix in OPEN_SUFFIXES), (f"{prefix}/static/",)


def create_console_router(
    *,
    principal: Callable[..., Any],
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
    router = APIRouter(prefix=prefix, include_in_schema=False)
    clinicians = allow(principal, *CONSOLE_ROLES)
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["html"]))
    env.globals.update(prefix=prefix, MEDICATION_WORDS=MEDICATION_WORDS)
    env.filters["local"] = lambda value, zone: views.local_time(value, zone)
    env.filters["q"] = lambda value: quote(str(value), safe="")
    headers = {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
            f"img-src 'self' data: blob: {media.origin}; media-src 'self' {media.origin}; connect-src 'self'; "
            "font-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'"),
        "Cache-Control": "no-store",
        "Referrer-Policy": "same-origin",
        "X-Content-Type-Options": "nosniff",
    }

    async def caller(request: Request, who: Principal = Depends(clinicians)) -> Caller:
        assert who.clinic_id is not None  # clinicians and clinic admins belong to a clinic
        return Caller(who, who.clinic_id, clinics.get(who.clinic_id),
                      sessions.csrf_token(request) if sessions else "")

    def page(name: str, c: Caller, status: int = 200, **context: Any) -> HTMLResponse:
        body = env.get_template(name).render(clinic=c.clinic, clinic_id=c.clinic_id, zone=c.clinic.zone,
                                             zone_now=clock().astimezone(c.clinic.zone).strftime("%Z"),
                                             user=c.principal.display_name or c.principal.subject, csrf=c.csrf,
                                             signed_in_by_cookie=bool(c.csrf),
                                             admin=c.principal.role is Role.CLINIC_ADMIN, **context)
        return HTMLResponse(body, status_code=status, headers=headers)

    async def record(c: Caller, action: str, outcome: str = "success", **fields: Any) -> None:
        await audit.record(AuditEvent(action=action, principal=c.principal, outcome=outcome, **fields))

    async def patient_of(c: Caller, patient_id: str, action: str) -> None:
        """404 unless the patient is on the caller's clinic's roster (recorded as not_found)."""
        if not _PATIENT.match(patient_id) or await roster.get(c.clinic_id, patient_id) is None:
            await record(c, action, "not_found", patient_id=patient_id if _PATIENT.match(patient_id) else None)
            raise NotFound()

    async def clinic_history(c: Caller, patient_id: str, limit: int) -> list[dict[str, Any]]:
        return [i for i in await history.latest(c.key_of(patient_id), limit) if clinic_of(i) == c.clinic_id]

    async def checkin_of(c: Caller, patient_id: str, job_id: str, action: str) -> dict[str, Any]:
        await patient_of(c, patient_id, action)
        item = await history.for_job(c.key_of(patient_id), job_id) if JOB_ID_PATTERN.match(job_id) else None
        if item is None or clinic_of(item) != c.clinic_id:
            await record(c, action, "not_found", patient_id=patient_id)
            raise NotFound()
        return item

    def not_found(c: Caller) -> HTMLResponse:
        return page("not_found.html", c, status=404)

    login_page = env.get_template("login.html")
    login_headers = {**headers, "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'")}
    binding_cookie = f"{sessions.cookie}_login" if sessions and sessions.cookie else None

    def login_response(status: int = 200, problem: str | None = None, next_path: str = "", clinic_id: str = "",
                       ended: str = "") -> HTMLResponse:
        listed = [(cid, clinics.get(cid)) for cid in ([clinic_id] if clinic_id else [])
                  if clinics.get(cid).sign_in] or ([] if clinic_id else clinics.signing_in())
        body = login_page.render(problem=problem, next=_local_path(next_path, prefix),
                                 cookies=bool(sessions and sessions.enabled), providers=listed,
                                 tokens=bool(sessions and sessions.enabled and sessions.authenticator.settings
                                             .bearer_configured),
                                 ended=ENDED.get(ended, "").format(
                                     minutes=max(1, round(sessions.policy.idle_seconds / 60)) if sessions else 15,
                                     hours=round(sessions.policy.lifetime_seconds / 3600) if sessions else 12))
        return HTMLResponse(body, status_code=status, headers=login_headers)

    def signed_in(request: Request, value: str, seconds: int, next_path: str) -> HTMLResponse:
        """Sets the session cookie and moves on with a same-site navigation, so the SameSite=Strict cookie
        is sent even when the sign-in came back from the provider's site."""
        target = _local_path(next_path, prefix) or f"{prefix}/"
        body = env.get_template("signed_in.html").render(target=target)
        response = HTMLResponse(body, headers=login_headers)
        assert sessions is not None
        response.headers["Set-Cookie"] = sessions.cookie_header(request, value, seconds)
        return response

    @router.get("/login", response_class=HTMLResponse)
    async def login_form(next: str = "", clinic: str = "", ended: str = "") -> HTMLResponse:
        """The sign-in page: the clinic's providers; a login link's token arrives in the fragment."""
        return login_response(next_path=next, clinic_id=clinic if is_clinic_id(clinic) else "", ended=ended)

    @router.post("/login")
    async def login(request: Request) -> Response:
        _same_site(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace")[:65536])
        token, next_path = (form.get("token") or [""])[0], (form.get("next") or [""])[0]
        if sessions is None or not sessions.enabled:
            return login_response(404, "Sign-in by cookie is off here: your clinic signs you in with its own "
                                       "login (SCHIZODOT_AUTH_SESSION_COOKIE is not set).")
        if not token.strip():
            return login_response(422, "Paste your token, or open the sign-in link you were sent.", next_path)
        try:
            who, seconds = await sessions.principal_of_token(token)
        except HTTPException as error:
            return login_response(error.status_code, str(error.detail), next_path)
        if who.role not in CONSOLE_ROLES:
            return login_response(403, "The console is for clinicians and clinic admins.", next_path)
        value, seconds = await sessions.begin(who, "token", ends_within=seconds)
        response = RedirectResponse(_local_path(next_path, prefix) or f"{prefix}/", status_code=303)
        response.headers["Set-Cookie"] = sessions.cookie_header(request, value, seconds)
        response.headers["Cache-Control"] = "no-store"
        return response

    def callback_url(request: Request) -> str:
        base = public_url or f"{str(request.base_url).rstrip('/')}{prefix}"
        return f"{base}/login/callback"

    async def refused(error: SignInRefused, clinic_id: str | None, provider_id: str | None,
                      next_path: str = "") -> HTMLResponse:
        await audit.record_system("console.sign_in", clinic_id=clinic_id, outcome="refused", detail={
            "reason": error.reason, "provider": provider_id, **({"person": error.subject} if error.subject else {})})
        return login_response(error.status, error.message, next_path, clinic_id=clinic_id or "")

    @router.get("/login/oidc")
    async def login_start(request: Request, clinic: str = "", provider: str = "", next: str = "") -> Response:
        """Off to the clinic's provider (authorization code with PKCE; oidc.py)."""
        chosen = clinics.get(clinic).provider(provider) if is_clinic_id(clinic) and clinic in clinics.configured() \
            else None
        if sessions is None or not sessions.enabled or oidc is None or chosen is None:
            return login_response(404, "There is no such way to sign in here; choose one below.", next)
        try:
            url, browser = await oidc.start(clinic, chosen, callback_url(request), _local_path(next, prefix))
        except SignInRefused as error:
            return await refused(error, clinic, provider, next)
        response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
        # Lax: the provider's redirect back is a top-level navigation from its own site.
        secure = "; Secure" if https(request) else ""
        response.headers["Set-Cookie"] = (f"{binding_cookie}={browser}; Max-Age={LOGIN_SECONDS}; "
                                          f"Path={prefix}/login; HttpOnly; SameSite=Lax{secure}")
        return response

    @router.get("/login/callback")
    async def login_callback(request: Request, state: str = "", code: str = "", error: str = "",
                             error_description: str = "") -> Response:
        if sessions is None or not sessions.enabled or oidc is None:
            return login_response(404, "Sign-in with a provider is off here.")
        attempt = None
        try:
            attempt = await oidc.take(state[:200], request.cookies.get(binding_cookie or ""))
            clinic = clinics.get(attempt.clinic_id)
            provider = clinic.provider(attempt.provider_id)
            if provider is None:
                raise SignInRefused("configuration", "This way of signing in was removed meanwhile; start again.",
                                    400)
            if error:
                raise SignInRefused(f"provider:{error[:40]}", f"{provider.name} did not sign you in: "
                                                              f"{(error_description or error)[:300]}", 401)
            if not code:
                raise SignInRefused("code", "The provider sent no code back; start again.", 400)
            claims = await oidc.finish(attempt, provider, code[:2000], callback_url(request))
            who = oidc.principal(attempt.clinic_id, clinic.name or attempt.clinic_id, provider, claims)
        except SignInRefused as refusal:
            return await refused(refusal, attempt.clinic_id if attempt else None,
                                 attempt.provider_id if attempt else None, attempt.next_path if attempt else "")
        detail = {"provider": provider.id, "amr": [m for m in claims.get("amr") or [] if isinstance(m, str)][:8]}
        value, seconds = await sessions.begin(who, f"oidc:{provider.id}", detail=detail)
        response = signed_in(request, value, seconds, attempt.next_path)
        response.headers.append("Set-Cookie", f"{binding_cookie}=; Max-Age=0; Path={prefix}/login; HttpOnly; "
                                              "SameSite=Lax")
        return response

    @router.post("/logout")
    async def logout(request: Request) -> Response:
        _same_site(request)
        response = RedirectResponse(f"{prefix}/login?ended=signed_out", status_code=303)
        if sessions is not None and sessions.cookie:
            await sessions.sign_out(request)
            response.headers["Set-Cookie"] = sessions.clear_header(request)
        return response

    @router.get("/sessions", response_class=HTMLResponse)
    async def session_list(request: Request, c: Caller = Depends(caller)):
        """A clinic admin's view of who is signed in, to end a person's sessions."""
        if c.principal.role is not Role.CLINIC_ADMIN or sessions is None:
            raise HTTPException(status_code=403, detail=FORBIDDEN)
        live = await sessions.live_in_clinic(c.clinic_id)
        await record(c, "console.session_list", detail={"sessions": len(live)})
        people: dict[str, list] = {}
        for s in live:
            people.setdefault(s.subject, []).append(s)
        return page("sessions.html", c, people=people, ended=request.query_params.get("ended", "")[:200],
                    idle_minutes=round(sessions.policy.idle_seconds / 60))

    @router.post("/sessions/end")
    async def end_sessions(request: Request, c: Caller = Depends(caller)):
        if c.principal.role is not Role.CLINIC_ADMIN or sessions is None:
            raise HTTPException(status_code=403, detail=FORBIDDEN)
        _same_site(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace")[:16384])
        sessions.check_csrf(request, (form.get("csrf") or [""])[0])
        subject = (form.get("subject") or [""])[0][:400]
        if not subject:
            return RedirectResponse(f"{prefix}/sessions", status_code=303)
        ended = await sessions.end_person(c.principal, subject)
        return RedirectResponse(f"{prefix}/sessions?ended={quote(f'{ended} session(s) of {subject}')}",
                                status_code=303)

    @router.get("/static/{name}")
    async def static(name: str) -> Response:
        if name not in STATIC:
            raise HTTPException(status_code=404, detail="not found")
        path, media_type = STATIC[name]
        return Response(path.read_bytes(), media_type=media_type,
                        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})

    @router.get("/", response_class=HTMLResponse)
    async def patient_list(c: Caller = Depends(caller), q: str = "", sort: str = "risk", order: str = "desc"):
        query = q.strip()[:100]
        entries = [e for e in await roster.patients(c.clinic_id) if query.lower() in e.patient_id.lower()]
        open_by_patient: dict[str, int] = {}
        for alert in await alerts.open_alerts(c.clinic_id):
            open_by_patient[alert.patient_id] = open_by_patient.get(alert.patient_id, 0) + 1
        reads = asyncio.Semaphore(LIST_CONCURRENCY)

        async def row(entry):
            async with reads:
                items = await clinic_history(c, entry.patient_id, 20)
            return views.patient_row(entry, items, open_by_patient.get(entry.patient_id, 0), c.clinic.zone)
        rows = list(await asyncio.gather(*(row(e) for e in entries)))
        sort = sort if sort in views.SORT_KEYS else "risk"
        rows = views.sort_rows(rows, sort, order != "asc")
        await record(c, "console.patient_list", detail={"patients": len(rows)})
        return page("patients.html", c, rows=rows, q=query, sort=sort, order="asc" if order == "asc" else "desc")

    @router.get("/alerts", response_class=HTMLResponse)
    async def open_alerts(c: Caller = Depends(caller)):
        found = await alerts.open_alerts(c.clinic_id)
        await record(c, "console.alert_list", detail={"alerts": len(found)})
        return page("alerts.html", c, alerts=found)

    @router.get("/patients/{patient_id}", response_class=HTMLResponse)
    async def patient_page(patient_id: str, c: Caller = Depends(caller)):
        try:
            await patient_of(c, patient_id, "console.patient_view")
        except NotFound:
            return not_found(c)
        items = await clinic_history(c, patient_id, history_limit)
        oldest_first = list(reversed(items))
        zone_name = c.clinic.timezone
        marker_plots = []
        for s in series.marker_series(oldest_first, c.clinic.zone):
            marker_plots.append({"series": s, "figure": plots.marker_figure(s, zone_name) if s.has_data else None})
        expressivity = next((p for p in marker_plots if p["series"].key == "facial_expressivity"), None)
        active = [j for j in await jobs.list_for_patient(c.key_of(patient_id), limit=10)
                  if j.active and j.clinic_id == c.clinic_id]
        patient_alerts = views.alert_sort(await alerts.for_patient(c.clinic_id, patient_id))
        await record(c, "console.patient_view", patient_id=patient_id, detail={"checkins": len(items)})
        risk = series.risk_series(oldest_first, c.clinic.zone)
        return page("patient.html", c, patient_id=patient_id, items=items, alerts=patient_alerts, active=active,
                    risk_figure=plots.risk_figure(risk, zone_name) if risk.times else None, risk=risk,
                    expressivity=expressivity,
                    marker_plots=[p for p in marker_plots if p is not expressivity],
                    calendar=views.adherence_calendar(items, c.clinic.zone, clock().astimezone(c.clinic.zone).date()),
                    adherence={days: adherence.adherence(patient_id, items, days, clock()) for days in (7, 30)},
                    adherence_words=adherence.WORDS, intake_of=adherence.intake_of,
                    needs_review=dosing.needs_review, reviews_on=reviews is not None,
                    row=views.patient_row(await roster.get(c.clinic_id, patient_id), items,
                                          sum(a.state == "open" for a in patient_alerts), c.clinic.zone),
                    when=lambda item: fmt_local(checkin_time(item), c.clinic.zone))

    @router.get("/patients/{patient_id}/checkins/{job_id}", response_class=HTMLResponse)
    async def checkin_page(patient_id: str, job_id: str, c: Caller = Depends(caller)):
        try:
            item = await checkin_of(c, patient_id, job_id, "console.checkin_view")
        except NotFound:
            return not_found(c)
        job: Job | None = await jobs.get(job_id)
        if job is not None and (job.patient_id != c.key_of(patient_id) or job.clinic_id != c.clinic_id):
            job = None
        view = views.checkin_view(item, job, c.clinic.zone, c.clinic.checkin)
        facial = (item.get("results") or {}).get("facial_emotion") or {}
        timeline = facial.get("timeline") or []
        labels = [e.get("emotion") for e in facial.get("all_emotions") or [] if e.get("emotion")]
        shapes = (facial.get("expressivity") or {}).get("blendshape_std") or {}
        await record(c, "console.checkin_view", patient_id=patient_id, job_id=job_id)
        return page("checkin.html", c, patient_id=patient_id, job_id=job_id, view=view, facial=facial,
                    timeline_figure=plots.emotion_timeline_figure(timeline, labels) if timeline else None,
                    expressivity_figure=plots.expressivity_figure(shapes) if shapes else None,
                    fusion=(item.get("results") or {}).get("multimodal_fusion") or {},
                    summary=(item.get("results") or {}).get("clinical_summary") or {},
                    compliance=(item.get("results") or {}).get("compliance") or {},
                    needs_review=dosing.needs_review(item), reviews_on=reviews is not None)

    async def media_redirect(c: Caller, patient_id: str, job_id: str, action: str, key_of, what: str) -> Response:
        try:
            item = await checkin_of(c, patient_id, job_id, action)
        except NotFound:
            return not_found(c)
        key = key_of(item)
        if not key:
            await record(c, action, "not_found", patient_id=patient_id, job_id=job_id, detail={"media": what})
            return not_found(c)
        await record(c, action, patient_id=patient_id, job_id=job_id, detail={"media": what})
        return RedirectResponse(await media.presign_get(key, media_url_seconds), status_code=303,
                                headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    @router.get("/patients/{patient_id}/checkins/{job_id}/video")
    async def video(patient_id: str, job_id: str, c: Caller = Depends(caller)):
        return await media_redirect(c, patient_id, job_id, "console.video_get", lambda item: item.get("s3_key"),
                                    "video")

    @router.get("/patients/{patient_id}/checkins/{job_id}/evidence/{step}")
    async def evidence(patient_id: str, job_id: str, step: str, c: Caller = Depends(caller)):
        def key_of(item: dict[str, Any]) -> str | None:
            if not _STEP.match(step):
                return None
            compliance = (item.get("results") or {}).get("compliance") or {}
            for found in compliance.get("steps") or []:
                key = found.get("evidence_frame")
                if found.get("step") == step and key and str(key).startswith(artifacts_prefix(job_id)):
                    return str(key)
            return None
        return await media_redirect(c, patient_id, job_id, "console.evidence_get", key_of,
                                    f"evidence:{step}" if _STEP.match(step) else "evidence")

    @router.get("/patients/{patient_id}/history.csv")
    async def export_csv(patient_id: str, c: Caller = Depends(caller)):
        try:
            await patient_of(c, patient_id, "console.export_csv")
        except NotFound:
            return not_found(c)
        items = list(reversed(await clinic_history(c, patient_id, 1000)))
        await record(c, "console.export_csv", patient_id=patient_id, detail={"checkins": len(items)})
        body = exports.history_csv(patient_id, items, c.clinic.zone)
        return Response(body, media_type="text/csv; charset=utf-8", headers={
            "Content-Disposition": f'attachment; filename="{patient_id}-history.csv"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})

    @router.get("/patients/{patient_id}/report.pdf")
    async def export_pdf(patient_id: str, c: Caller = Depends(caller)):
        try:
            await patient_of(c, patient_id, "console.export_pdf")
        except NotFound:
            return not_found(c)
        items = list(reversed(await clinic_history(c, patient_id, history_limit)))
        titles = [a.title for a in await alerts.for_patient(c.clinic_id, patient_id) if a.state == "open"]
        await record(c, "console.export_pdf", patient_id=patient_id, detail={"checkins": len(items)})
        body = await run_in_threadpool(exports.report_pdf, patient_id, c.clinic.name or c.clinic_id, items,
                                       c.clinic.zone, titles, clock())
        return Response(body, media_type="application/pdf", headers={
            "Content-Disposition": f'attachment; filename="{patient_id}-report.pdf"', "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff"})

    @router.post("/alerts/{alert_id}/acknowledge")
    async def acknowledge(alert_id: str, request: Request, c: Caller = Depends(caller)):
        _same_site(request)
        form = parse_qs((await request.body()).decode("utf-8", "replace")[:16384])
        if sessions is not None:
            sessions.check_csrf(request, (form.get("csrf") or [""])[0])
        note = (form.get("note") or [""])[0].strip()
        back = (form.get("back") or [""])[0]
        alert = await alerts.get(c.clinic_id, alert_id) if len(alert_id) < 80 else None
        if alert is None:
            await record(c, "console.alert_acknowledge", "not_found", alert_id=alert_id[:80])
            return not_found(c)
        if not note:
            return page("alerts.html", c, status=422, alerts=await alerts.open_alerts(c.clinic_id),
                        problem="Write a note saying what was done before acknowledging the alert.")
        # The audit record (issue 12) is written before the change: no unaudited acknowledgement.
        await record(c, "console.alert_acknowledge", patient_id=alert.patient_id, job_id=alert.job_id,
                     alert_id=alert_id, detail={"note_chars": len(note)})
        try:
            await alerts.acknowledge(c.clinic_id, alert_id, c.principal.display_name or c.principal.subject,
                                     note[:NOTE_MAX], clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        except AlreadyAcknowledged:
            pass  # someone was first; the page shows who
        target = f"{prefix}/alerts" if back == "alerts" else f"{prefix}/patients/{alert.patient_id}"
        return RedirectResponse(f"{target}#alert-{alert_id}", status_code=303)

    if reviews is not None:
        router.include_router(review_pages.review_router(review_pages.ConsoleKit(
            caller=caller, page=page, record=record, roster=roster, clinic_history=clinic_history,
            checkin_of=checkin_of, not_found=not_found, same_site=_same_site, sessions=sessions, media=media,
            media_url_seconds=media_url_seconds, not_found_error=NotFound, prefix=prefix), reviews))

    return router


def _local_path(path: str, prefix: str) -> str:
    """`path` if it is a page of the console (never another site: no open redirect), else ''."""
    parts = urlsplit(path)
    if parts.scheme or parts.netloc or not parts.path.startswith(prefix + "/") or "\\" in path:
        return ""
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _same_site(request: Request) -> None:
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
