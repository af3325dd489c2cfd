"""Signing in to the console from a browser: server-side sessions, and forms that cannot be forged.

**The cookie holds only an opaque session id** (`SCHIZODOT_AUTH_SESSION_COOKIE`, read by
shared.identity.auth on the paths in `SCHIZODOT_AUTH_COOKIE_PATHS`, `/console`): 256 random bits,
`HttpOnly`, `SameSite=Strict`, `Secure` over HTTPS, `Path=/console`. The session lives in
`SchizodotConsoleSessions` under the SHA-256 of that id (a read of the table gives no
usable cookie): who (subject, role, clinic, name), how they signed in, when, the last
request, the idle timeout and the absolute end (also the table's TTL attribute).

A session begins in one of two ways:
- the clinic's OpenID Provider (oidc.py: authorization code with PKCE), the way people sign in;
- a bearer token checked like any other (the development issuer's login link of `make demo`,
  `/console/login#token=...`, or a pasted token); such a session ends with the token at the latest.

Every request through the cookie `resolve`s the session (a consistent read): a session
idle for longer than `idle_seconds` (15 minutes by default, HIPAA's automatic logoff) or
older than `lifetime_seconds` (12 hours) is deleted and the sign-in page says why; one a
clinic admin ended (`end_person`: every session of one person in the clinic) is refused
at its next request. Logout deletes the session. Sign-in, sign-out, timeout and
revocation each leave an audit record (shared.identity.audit).

Sign-ins in progress (the OIDC `state`, `nonce` and PKCE verifier, and the hash of a
cookie that binds them to the browser that started them) are kept in the same table
under the SHA-256 of the `state`, for 10 minutes, and taken exactly once.

Every form post carries a CSRF token: an HMAC of the session cookie under a key of the
service (`csrf_token`), checked with `check_csrf` when the credential came from the
cookie. The router also checks `Origin` / `Sec-Fetch-Site`; with `SameSite=Strict` that
makes three defences.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jwt
import structlog
from fastapi import HTTPException, Request

from services.results.console.session_store import ConsoleSession, SessionStore
from shared.identity.audit import AuditEvent, AuditTrail, AuditUnavailable
from shared.identity.auth import Authenticator
from shared.identity.credentials import iso
from shared.identity.errors import AuthenticationFailed, AuthenticationUnavailable, SessionEnded
from shared.identity.principal import Principal

log = structlog.get_logger()

SESSION_PREFIX = "scs_"
_SESSION = re.compile(r"^scs_[A-Za-z0-9_-]{43}$")
LOGIN_SECONDS = 600  # a sign-in at the provider must come back within this


def derive_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose from a service secret (domain separation: the secret's other uses are unaffected)."""
    return hmac.new(secret.encode(), f"schizodot:{purpose}".encode(), hashlib.sha256).digest()


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True)
class SessionPolicy:
    idle_seconds: int = 900  # automatic logoff after inactivity (HIPAA §164.312(a)(2)(iii))
    lifetime_seconds: int = 43200  # the absolute end, however active


class ConsoleSessions:
    """Begins, resolves and ends the console's sessions (shared.identity.auth's `SessionResolver`)."""

    def __init__(self, authenticator: Authenticator, csrf_key: bytes, cookie: str | None, *,
                 store: SessionStore, audit: AuditTrail, policy: SessionPolicy = SessionPolicy(),
                 path: str = "/console", clock: Callable[[], float] = time.time) -> None:
        self.authenticator = authenticator
        self.csrf_key = csrf_key
        self.cookie = cookie  # None: sign-in by cookie is off (a proxy forwards the bearer token)
        self.store = store
        self.audit = audit
        self.policy = policy
        self.path = path
        self._clock = clock
        if self.enabled:
            authenticator.sessions = self

    @property
    def enabled(self) -> bool:
        return bool(self.cookie) and any(self.path.startswith(p) or p.startswith(self.path)
                                         for p in self.authenticator.settings.cookie_paths)

    def now(self) -> int:
        return int(self._clock())

    # --- beginning --------------------------------------------------------------------------

    async def principal_of_token(self, token: str) -> tuple[Principal, int]:
        """The principal of a bearer token and the seconds it stays valid; 401 otherwise."""
        token = token.strip()
        try:
            who = await self.authenticator.bearer(token, "GET", links=False)
        except AuthenticationFailed as error:
            raise HTTPException(status_code=401, detail="this sign-in link or token is not valid; "
                                                        "ask for a new one") from error
        except AuthenticationUnavailable as error:
            raise HTTPException(status_code=503, detail="sign-in is unavailable; try again",
                                headers={"Retry-After": "5"}) from error
        expires = jwt.decode(token, options={"verify_signature": False})["exp"]  # checked by bearer() just now
        return who, max(0, int(expires) - self.now())

    async def begin(self, who: Principal, method: str, *, ends_within: int | None = None,
                    detail: dict[str, Any] | None = None) -> tuple[str, int]:
        """A new session of `who` (audited); the cookie's value and its lifetime in seconds."""
        assert who.clinic_id is not None
        now = self.now()
        lifetime = self.policy.lifetime_seconds if ends_within is None else min(ends_within,
                                                                                self.policy.lifetime_seconds)
        value = SESSION_PREFIX + secrets.token_urlsafe(32)
        session = ConsoleSession(
            session_id=_hash(value), subject=who.subject, role=who.role.value, clinic_id=who.clinic_id,
            display_name=who.display_name, method=method, created_at=iso(now), last_seen=now,
            idle_seconds=self.policy.idle_seconds, expires_at=now + lifetime)
        await self.audit.record(AuditEvent("console.sign_in", session.principal(),
                                           detail={"method": method, **(detail or {})}))
        await self.store.put(session)
        return value, lifetime

    # --- every request ----------------------------------------------------------------------

    async def resolve(self, value: str) -> Principal:
        if not _SESSION.match(value):
            raise AuthenticationFailed("not a session id")
        session_id = _hash(value)
        try:
            session = await self.store.get(session_id)
        except Exception as error:
            raise AuthenticationUnavailable(f"session store: {type(error).__name__}") from error
        if session is None:
            raise AuthenticationFailed("unknown or ended session")
        now = self.now()
        if session.revoked_at:
            await self._end(session, "revoked", record=False)  # the revocation itself was audited
            raise SessionEnded("revoked")
        if now - session.last_seen > session.idle_seconds:
            await self._end(session, "idle")
            raise SessionEnded("idle")
        if now >= session.expires_at:
            await self._end(session, "expired")
            raise SessionEnded("expired")
        # Activity is written at most every few seconds (a page loads several resources at once).
        if now - session.last_seen >= min(30, max(1, session.idle_seconds // 10)):
            await self.store.touch(session_id, now)
        return session.principal()

    async def _end(self, session: ConsoleSession, why: str, *, record: bool = True) -> None:
        try:
            if record:
                await self.audit.record(AuditEvent("console.session_timeout", session.principal(),
                                                   detail={"reason": why, "method": session.method}))
            await self.store.delete(session.session_id)
        except AuditUnavailable as error:
            raise AuthenticationUnavailable("audit trail") from error

    # --- ending -----------------------------------------------------------------------------

    async def sign_out(self, request: Request) -> bool:
        """Deletes the caller's session (audited); False when there was none."""
        value = self._session(request)
        if not value or not _SESSION.match(value):
            return False
        session = await self.store.get(_hash(value))
        if session is None:
            return False
        await self.audit.record(AuditEvent("console.sign_out", session.principal(), detail={"method": session.method}))
        await self.store.delete(session.session_id)
        return True

    async def live_in_clinic(self, clinic_id: str) -> list[ConsoleSession]:
        now = self.now()
        return sorted((s for s in await self.store.of_clinic(clinic_id)
                       if not s.revoked_at and now - s.last_seen <= s.idle_seconds and now < s.expires_at),
                      key=lambda s: (s.display_name or s.subject, s.created_at))

    async def end_person(self, admin: Principal, subject: str) -> int:
        """A clinic admin ends every session of one person in their clinic (audited before it is done)."""
        assert admin.clinic_id is not None
        live = [s for s in await self.live_in_clinic(admin.clinic_id) if s.subject == subject]
        await self.audit.record(AuditEvent("console.sessions_revoked", admin,
                                           detail={"person": subject, "sessions": len(live)}))
        return await self.store.revoke_person(admin.clinic_id, subject, iso(self.now()))

    # --- the cookie and forms ---------------------------------------------------------------

    def cookie_header(self, request: Request, value: str, seconds: int) -> str:
        secure = "; Secure" if _https(request) else ""
        return f"{self.cookie}={value}; Max-Age={seconds}; Path={self.path}; HttpOnly; SameSite=Strict{secure}"

    def clear_header(self, request: Request) -> str:
        return self.cookie_header(request, "", 0)

    def _session(self, request: Request) -> str | None:
        if not self.cookie or request.headers.get("authorization") or request.headers.get("x-api-key"):
            return None  # a header credential: a browser never sends one by itself, nothing to forge
        return request.cookies.get(self.cookie)

    def _mac(self, session: str) -> str:
        return hmac.new(self.csrf_key, session.encode(), hashlib.sha256).hexdigest()

    def csrf_token(self, request: Request) -> str:
        """The token the page's forms carry (empty when the caller did not come by cookie)."""
        session = self._session(request)
        return self._mac(session) if session else ""

    def check_csrf(self, request: Request, presented: str) -> None:
        session = self._session(request)
        if session is None:
            return
        if not hmac.compare_digest(self._mac(session), presented or ""):
            raise HTTPException(status_code=403, detail="the form is out of date; reload the page and try again")


def _https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


def https(request: Request) -> bool:
    return _https(request)
