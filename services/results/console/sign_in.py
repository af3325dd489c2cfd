"""The console's sign-in routes: the sign-in page, a token's sign-in, OpenID Connect, sign-out, and a
clinic admin's list of who is signed in.

The sign-in pages hold no PHI and are served without a credential (`OPEN_SUFFIXES`, opened in
shared.identity.auth by the results app); sessions live in sessions.py, the provider's flow in oidc.py.
Every form post must come from this site (`same_site`).
"""

from __future__ import annotations

from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.results.console.context import CONSOLE_ROLES, Caller, Console, caller, console_of, same_site
from services.results.console.oidc import SignInRefused
from services.results.console.sessions import LOGIN_SECONDS, https
from shared.identity.middleware import FORBIDDEN
from shared.identity.principal import Role, is_clinic_id

# Served without a credential (they hold no PHI): the results app opens them in shared.identity.auth.
OPEN_SUFFIXES = ("/login", "/logout", "/login/oidc", "/login/callback")
# Why the sign-in page is shown (`?ended=`): the session ended (sessions.py).
ENDED = {
    "idle": "You were signed out after {minutes} minutes without activity, to protect patients' data. "
            "Sign in again to go on.",
    "expired": "Your session reached its {hours}-hour limit. Sign in again to go on.",
    "revoked": "Your clinic's administrator ended your sessions. Sign in again to go on.",
    "signed_out": "You are signed out.",
}

router = APIRouter()


def binding_cookie(console: Console) -> str | None:
    """The cookie tying a provider's sign-in to the browser that started it."""
    sessions = console.sessions
    return f"{sessions.cookie}_login" if sessions and sessions.cookie else None


def login_response(console: Console, status: int = 200, problem: str | None = None, next_path: str = "",
                   clinic_id: str = "", ended: str = "") -> HTMLResponse:
    sessions, clinics = console.sessions, console.clinics
    listed = [(cid, clinics.get(cid)) for cid in ([clinic_id] if clinic_id else [])
              if clinics.get(cid).sign_in] or ([] if clinic_id else clinics.signing_in())
    body = console.templates.get_template("login.html").render(
        problem=problem, next=console.local_path(next_path), cookies=bool(sessions and sessions.enabled),
        providers=listed,
        tokens=bool(sessions and sessions.enabled and sessions.authenticator.settings.bearer_configured),
        ended=ENDED.get(ended, "").format(
            minutes=max(1, round(sessions.policy.idle_seconds / 60)) if sessions else 15,
            hours=round(sessions.policy.lifetime_seconds / 3600) if sessions else 12))
    return HTMLResponse(body, status_code=status, headers=console.login_headers)


def signed_in(console: Console, request: Request, value: str, seconds: int, next_path: str) -> HTMLResponse:
    """Sets the session cookie and moves on with a same-site navigation, so the SameSite=Strict cookie
    is sent even when the sign-in came back from the provider's site."""
    target = console.local_path(next_path) or f"{console.prefix}/"
    body = console.templates.get_template("signed_in.html").render(target=target)
    response = HTMLResponse(body, headers=console.login_headers)
    assert console.sessions is not None
    response.headers["Set-Cookie"] = console.sessions.cookie_header(request, value, seconds)
    return response


def callback_url(console: Console, request: Request) -> str:
    base = console.public_url or f"{str(request.base_url).rstrip('/')}{console.prefix}"
    return f"{base}/login/callback"


async def refused(console: Console, error: SignInRefused, clinic_id: str | None, provider_id: str | None,
                  next_path: str = "") -> HTMLResponse:
    await console.audit.record_system("console.sign_in", clinic_id=clinic_id, outcome="refused", detail={
        "reason": error.reason, "provider": provider_id, **({"person": error.subject} if error.subject else {})})
    return login_response(console, error.status, error.message, next_path, clinic_id=clinic_id or "")


@router.get("/login", response_class=HTMLResponse)
async def login_form(next: str = "", clinic: str = "", ended: str = "",
                     console: Console = Depends(console_of)) -> HTMLResponse:
    """The sign-in page: the clinic's providers; a login link's token arrives in the fragment."""
    return login_response(console, next_path=next, clinic_id=clinic if is_clinic_id(clinic) else "", ended=ended)


@router.post("/login")
async def login(request: Request, console: Console = Depends(console_of)) -> Response:
    same_site(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace")[:65536])
    token, next_path = (form.get("token") or [""])[0], (form.get("next") or [""])[0]
    sessions = console.sessions
    if sessions is None or not sessions.enabled:
        return login_response(console, 404, "Sign-in by cookie is off here: your clinic signs you in with its own "
                                             "login (SCHIZODOT_AUTH_SESSION_COOKIE is not set).")
    if not token.strip():
        return login_response(console, 422, "Paste your token, or open the sign-in link you were sent.", next_path)
    try:
        who, seconds = await sessions.principal_of_token(token)
    except HTTPException as error:
        return login_response(console, error.status_code, str(error.detail), next_path)
    if who.role not in CONSOLE_ROLES:
        return login_response(console, 403, "The console is for clinicians and clinic admins.", next_path)
    value, seconds = await sessions.begin(who, "token", ends_within=seconds)
    response = RedirectResponse(console.local_path(next_path) or f"{console.prefix}/", status_code=303)
    response.headers["Set-Cookie"] = sessions.cookie_header(request, value, seconds)
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/login/oidc")
async def login_start(request: Request, clinic: str = "", provider: str = "", next: str = "",
                      console: Console = Depends(console_of)) -> Response:
    """Off to the clinic's provider (authorization code with PKCE; oidc.py)."""
    clinics, oidc = console.clinics, console.oidc
    chosen = clinics.get(clinic).provider(provider) if is_clinic_id(clinic) and clinic in clinics.configured() \
        else None
    if console.sessions is None or not console.sessions.enabled or oidc is None or chosen is None:
        return login_response(console, 404, "There is no such way to sign in here; choose one below.", next)
    try:
        url, browser = await oidc.start(clinic, chosen, callback_url(console, request), console.local_path(next))
    except SignInRefused as error:
        return await refused(console, error, clinic, provider, next)
    response = RedirectResponse(url, status_code=303, headers={"Cache-Control": "no-store"})
    # Lax: the provider's redirect back is a top-level navigation from its own site.
    secure = "; Secure" if https(request) else ""
    response.headers["Set-Cookie"] = (f"{binding_cookie(console)}={browser}; Max-Age={LOGIN_SECONDS}; "
                                      f"Path={console.prefix}/login; HttpOnly; SameSite=Lax{secure}")
    return response


@router.get("/login/callback")
async def login_callback(request: Request, state: str = "", code: str = "", error: str = "",
                         error_description: str = "", console: Console = Depends(console_of)) -> Response:
    sessions, oidc = console.sessions, console.oidc
    if sessions is None or not sessions.enabled or oidc is None:
        return login_response(console, 404, "Sign-in with a provider is off here.")
    attempt = None
    try:
        attempt = await oidc.take(state[:200], request.cookies.get(binding_cookie(console) or ""))
        clinic = console.clinics.get(attempt.clinic_id)
        provider = clinic.provider(attempt.provider_id)
        if provider is None:
            raise SignInRefused("configuration", "This way of signing in was removed meanwhile; start again.", 400)
        if error:
            raise SignInRefused(f"provider:{error[:40]}", f"{provider.name} did not sign you in: "
                                                          f"{(error_description or error)[:300]}", 401)
        if not code:
            raise SignInRefused("code", "The provider sent no code back; start again.", 400)
        claims = await oidc.finish(attempt, provider, code[:2000], callback_url(console, request))
        who = oidc.principal(attempt.clinic_id, clinic.name or attempt.clinic_id, provider, claims)
    except SignInRefused as refusal:
        return await refused(console, refusal, attempt.clinic_id if attempt else None,
                             attempt.provider_id if attempt else None, attempt.next_path if attempt else "")
    detail = {"provider": provider.id, "amr": [m for m in claims.get("amr") or [] if isinstance(m, str)][:8]}
    value, seconds = await sessions.begin(who, f"oidc:{provider.id}", detail=detail)
    response = signed_in(console, request, value, seconds, attempt.next_path)
    response.headers.append("Set-Cookie", f"{binding_cookie(console)}=; Max-Age=0; Path={console.prefix}/login; "
                                          "HttpOnly; SameSite=Lax")
    return response


@router.post("/logout")
async def logout(request: Request, console: Console = Depends(console_of)) -> Response:
    same_site(request)
    response = RedirectResponse(f"{console.prefix}/login?ended=signed_out", status_code=303)
    if console.sessions is not None and console.sessions.cookie:
        await console.sessions.sign_out(request)
        response.headers["Set-Cookie"] = console.sessions.clear_header(request)
    return response


@router.get("/sessions", response_class=HTMLResponse)
async def session_list(request: Request, c: Caller = Depends(caller), console: Console = Depends(console_of)):
    """A clinic admin's view of who is signed in, to end a person's sessions."""
    sessions = console.sessions
    if c.principal.role is not Role.CLINIC_ADMIN or sessions is None:
        raise HTTPException(status_code=403, detail=FORBIDDEN)
    live = await sessions.live_in_clinic(c.clinic_id)
    await console.record(c, "console.session_list", detail={"sessions": len(live)})
    people: dict[str, list] = {}
    for s in live:
        people.setdefault(s.subject, []).append(s)
    return console.page("sessions.html", c, people=people, ended=request.query_params.get("ended", "")[:200],
                        idle_minutes=round(sessions.policy.idle_seconds / 60))


@router.post("/sessions/end")
async def end_sessions(request: Request, c: Caller = Depends(caller), console: Console = Depends(console_of)):
    sessions = console.sessions
    if c.principal.role is not Role.CLINIC_ADMIN or sessions is None:
        raise HTTPException(status_code=403, detail=FORBIDDEN)
    same_site(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace")[:16384])
    sessions.check_csrf(request, (form.get("csrf") or [""])[0])
    subject = (form.get("subject") or [""])[0][:400]
    if not subject:
        return RedirectResponse(f"{console.prefix}/sessions", status_code=303)
    ended = await sessions.end_person(c.principal, subject)
    return RedirectResponse(f"{console.prefix}/sessions?ended={quote(f'{ended} session(s) of {subject}')}",
                            status_code=303)
