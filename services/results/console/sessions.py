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
from dataclasses import asdict, dataclass, replace
from typing import Any, Protocol

import jwt
import structlog
from fastapi import HTTPException, Request

from shared.aws.dynamo import from_item, is_conditional_failure, to_item
from shared.identity.audit import AuditEvent, AuditTrail, AuditUnavailable
from shared.identity.auth import Authenticator
from shared.identity.credentials import iso
from shared.identity.errors import AuthenticationFailed, AuthenticationUnavailable, SessionEnded
from shared.identity.principal import CredentialKind, Principal, Role
from shared.runtime.infra import SESSIONS_BY_PERSON_INDEX

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
class ConsoleSession:
    session_id: str  # SHA-256 of the cookie's value
    subject: str
    role: str
    clinic_id: str
    display_name: str | None
    method: str  # how they signed in: "oidc:<provider id>" or "token"
    created_at: str
    last_seen: int  # epoch seconds
    idle_seconds: int
    expires_at: int  # epoch seconds: the absolute end (and the table's TTL)
    revoked_at: str | None = None

    def principal(self) -> Principal:
        return Principal(subject=self.subject, role=Role(self.role), clinic_id=self.clinic_id,
                         credential=CredentialKind.SESSION, display_name=self.display_name,
                         credential_id=self.session_id[:16])


@dataclass(frozen=True)
class LoginAttempt:
    """A sign-in at a provider, between the redirect there and the callback."""

    state_hash: str
    clinic_id: str
    provider_id: str
    nonce: str
    code_verifier: str
    browser_hash: str  # SHA-256 of the binding cookie the starting browser got
    next_path: str
    expires_at: int


class SessionStore(Protocol):
    async def put(self, session: ConsoleSession) -> None: ...

    async def get(self, session_id: str) -> ConsoleSession | None: ...

    async def touch(self, session_id: str, now: int) -> None:
        """Record activity (never revives a deleted or revoked session)."""

    async def delete(self, session_id: str) -> bool: ...

    async def of_clinic(self, clinic_id: str) -> list[ConsoleSession]: ...

    async def revoke_person(self, clinic_id: str, subject: str, at: str) -> int:
        """Mark every session of one person in the clinic revoked; how many were live."""

    async def put_login(self, attempt: LoginAttempt) -> None: ...

    async def take_login(self, state_hash: str) -> LoginAttempt | None:
        """The attempt, removed: a second take of the same state finds nothing."""


_SESSION_FIELDS = tuple(ConsoleSession.__dataclass_fields__)
_LOGIN_FIELDS = tuple(LoginAttempt.__dataclass_fields__)


def _session_of(item: dict[str, Any]) -> ConsoleSession:
    values = {k: item.get(k) for k in _SESSION_FIELDS}
    for k in ("last_seen", "idle_seconds", "expires_at"):
        values[k] = int(values[k])
    return ConsoleSession(**values)


class InMemorySessionStore:
    def __init__(self) -> None:
        self.sessions: dict[str, ConsoleSession] = {}
        self.logins: dict[str, LoginAttempt] = {}

    async def put(self, session: ConsoleSession) -> None:
        self.sessions[session.session_id] = session

    async def get(self, session_id: str) -> ConsoleSession | None:
        return self.sessions.get(session_id)

    async def touch(self, session_id: str, now: int) -> None:
        found = self.sessions.get(session_id)
        if found is not None and found.revoked_at is None:
            self.sessions[session_id] = replace(found, last_seen=now)

    async def delete(self, session_id: str) -> bool:
        return self.sessions.pop(session_id, None) is not None

    async def of_clinic(self, clinic_id: str) -> list[ConsoleSession]:
        return [s for s in self.sessions.values() if s.clinic_id == clinic_id]

    async def revoke_person(self, clinic_id: str, subject: str, at: str) -> int:
        ended = [s for s in self.sessions.values()
                 if s.clinic_id == clinic_id and s.subject == subject and s.revoked_at is None]
        for s in ended:
            self.sessions[s.session_id] = replace(s, revoked_at=at)
        return len(ended)

    async def put_login(self, attempt: LoginAttempt) -> None:
        self.logins[attempt.state_hash] = attempt

    async def take_login(self, state_hash: str) -> LoginAttempt | None:
        return self.logins.pop(state_hash, None)


class DynamoSessionStore:
    """`SessionStore` on `SchizodotConsoleSessions` (key `session_id`; GSI `clinic_id-subject-index`;
    TTL `expires_at`). Sign-ins in progress are items keyed `login:<state hash>` without a subject."""

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    def _key(self, session_id: str) -> dict[str, Any]:
        return {"session_id": {"S": session_id}}

    async def put(self, session: ConsoleSession) -> None:
        item = {k: v for k, v in asdict(session).items() if v is not None}
        await self._db.put_item(TableName=self._table, Item=to_item(item),
                                ConditionExpression="attribute_not_exists(session_id)")

    async def get(self, session_id: str) -> ConsoleSession | None:
        response = await self._db.get_item(TableName=self._table, Key=self._key(session_id), ConsistentRead=True)
        item = from_item(response["Item"]) if "Item" in response else None
        return _session_of(item) if item and "subject" in item else None

    async def touch(self, session_id: str, now: int) -> None:
        try:
            await self._db.update_item(
                TableName=self._table, Key=self._key(session_id), UpdateExpression="SET last_seen = :now",
                ConditionExpression="attribute_exists(subject) AND attribute_not_exists(revoked_at)",
                ExpressionAttributeValues={":now": {"N": str(now)}})
        except Exception as error:
            if not is_conditional_failure(error):
                raise

    async def delete(self, session_id: str) -> bool:
        response = await self._db.delete_item(TableName=self._table, Key=self._key(session_id),
                                              ReturnValues="ALL_OLD")
        return "Attributes" in response

    async def _query(self, values: dict[str, Any], condition: str) -> list[ConsoleSession]:
        found: list[ConsoleSession] = []
        pages = self._db.get_paginator("query").paginate(
            TableName=self._table, IndexName=SESSIONS_BY_PERSON_INDEX, KeyConditionExpression=condition,
            ExpressionAttributeValues=to_item(values))
        async for page in pages:
            found += [_session_of(from_item(item)) for item in page.get("Items", [])]
        return found

    async def of_clinic(self, clinic_id: str) -> list[ConsoleSession]:
        return await self._query({":c": clinic_id}, "clinic_id = :c")

    async def revoke_person(self, clinic_id: str, subject: str, at: str) -> int:
        ended = 0
        for session in await self._query({":c": clinic_id, ":s": subject}, "clinic_id = :c AND subject = :s"):
            try:
                await self._db.update_item(
                    TableName=self._table, Key=self._key(session.session_id), UpdateExpression="SET revoked_at = :at",
                    ConditionExpression="attribute_exists(subject) AND attribute_not_exists(revoked_at)",
                    ExpressionAttributeValues={":at": {"S": at}})
                ended += 1
            except Exception as error:
                if not is_conditional_failure(error):
                    raise
        return ended

    async def put_login(self, attempt: LoginAttempt) -> None:
        item = {"session_id": f"login:{attempt.state_hash}", **asdict(attempt)}
        await self._db.put_item(TableName=self._table, Item=to_item(item),
                                ConditionExpression="attribute_not_exists(session_id)")

    async def take_login(self, state_hash: str) -> LoginAttempt | None:
        response = await self._db.delete_item(TableName=self._table, Key=self._key(f"login:{state_hash}"),
                                              ReturnValues="ALL_OLD")
        if "Attributes" not in response:
            return None
        item = from_item(response["Attributes"])
        return LoginAttempt(**{k: (int(item[k]) if k == "expires_at" else item[k]) for k in _LOGIN_FIELDS})


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
