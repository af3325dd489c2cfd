"""Authentication: who is calling, from whatever credential they bring.

Three kinds of credential, each turned into a `shared.identity.principal.Principal` by the one
`Authenticator` here:

- **People**: OIDC bearer tokens (JWT), checked by `shared.identity.tokens`; or, in a browser, a
  server-side session id in a cookie, resolved by the app that keeps sessions (the console).
- **Systems**: API keys (`shared.identity.credentials`), refused at once when revoked or expired.
- **Patients**: one-time links (`shared.identity.credentials`), bound to one clinic, one patient and
  one check-in; a consumed link still reads its check-in's state (GET) until it expires, and never
  writes again.

The FastAPI middleware and the route dependencies are `shared.identity.middleware`.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Awaitable
from typing import Any, Protocol

from fastapi import Request

from shared.identity.credentials import (
    API_KEY_PATTERN,
    LINK_PATTERN,
    LINK_PREFIX,
    ApiKeyStore,
    PatientLinkStore,
    now_epoch,
    sha256,
)
from shared.identity.errors import AuthenticationFailed, AuthenticationUnavailable
from shared.identity.principal import CredentialKind, Principal
from shared.identity.tokens import AuthSettings, TokenVerifier

SAFE_METHODS = frozenset({"GET", "HEAD"})


class SessionResolver(Protocol):
    async def resolve(self, session_id: str) -> Principal:
        """The person of a live session; SessionEnded / AuthenticationFailed otherwise."""


# --- one authenticator for every API ------------------------------------------------------------


class Authenticator:
    """Turns a request's credential into a `Principal`, or raises AuthenticationFailed."""

    def __init__(self, settings: AuthSettings, api_keys: ApiKeyStore | None = None,
                 links: PatientLinkStore | None = None, sessions: SessionResolver | None = None) -> None:
        self.settings = settings
        self.tokens = TokenVerifier(settings)
        self.api_keys = api_keys
        self.links = links
        self.sessions = sessions  # set by the app that keeps browser sessions (the console)

    async def authenticate(self, request: Request) -> Principal:
        headers = request.headers
        api_key = headers.get("x-api-key")
        authorization = headers.get("authorization")
        if api_key is not None and authorization is not None:
            raise AuthenticationFailed("two credentials")
        if api_key is not None:
            return await self.api_key(api_key)
        if authorization is not None:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthenticationFailed("not a bearer credential")
            return await self.bearer(token.strip(), request.method)
        cookie = self.settings.session_cookie
        if cookie and any(request.url.path.startswith(p) for p in self.settings.cookie_paths):
            session = request.cookies.get(cookie)
            if session:
                if self.sessions is None:
                    raise AuthenticationFailed("no session store here")
                return await self.sessions.resolve(session)  # the cookie is a session id, never a token
        raise AuthenticationFailed("no credential")

    async def bearer(self, token: str, method: str = "GET", *, links: bool = True) -> Principal:
        if token.startswith(LINK_PREFIX):
            if not links:
                raise AuthenticationFailed("a patient link is not a session")
            return await self.patient_link(token, method)
        claims = await asyncio.get_running_loop().run_in_executor(None, self.tokens.verify, token)
        return self.tokens.principal(claims)

    async def api_key(self, presented: str) -> Principal:
        match = API_KEY_PATTERN.match(presented.strip())
        if match is None or self.api_keys is None:
            raise AuthenticationFailed("not an API key")
        found = await self._guarded(self.api_keys.find(match.group(1)))
        # Compared even when the key is unknown, so timing does not tell which ids exist.
        expected = found[1] if found else "0" * 64
        if not hmac.compare_digest(sha256(match.group(2)), expected) or found is None:
            raise AuthenticationFailed("unknown API key")
        key = found[0]
        if key.revoked_at:
            raise AuthenticationFailed("revoked API key")
        if key.expired():
            raise AuthenticationFailed("expired API key")
        return Principal(subject=f"key:{key.name}", role=key.role, clinic_id=key.clinic_id,
                         credential=CredentialKind.API_KEY, credential_id=key.key_id, display_name=key.name)

    async def patient_link(self, token: str, method: str) -> Principal:
        if not LINK_PATTERN.match(token) or self.links is None:
            raise AuthenticationFailed("not a patient link")
        link = await self._guarded(self.links.find(sha256(token)))
        if link is None:
            raise AuthenticationFailed("unknown patient link")
        if link.expires_at <= now_epoch():
            raise AuthenticationFailed("expired patient link")
        if link.used_at and method.upper() not in SAFE_METHODS:
            raise AuthenticationFailed("used patient link")  # its one upload is done: reads only
        return link.principal()

    @staticmethod
    async def _guarded(call: Awaitable[Any]) -> Any:
        try:
            return await call
        except Exception as error:
            raise AuthenticationUnavailable(f"{type(error).__name__}: {error}") from error


