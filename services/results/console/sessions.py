"""Signing in to the console from a browser, and keeping its forms from being forged.

A browser cannot add an `Authorization` header to a page it navigates to, so the
console also takes the caller's bearer token from an HttpOnly cookie
(`SCHIZODOT_AUTH_SESSION_COOKIE`, read by shared.auth on the paths in
`SCHIZODOT_AUTH_COOKIE_PATHS`, `/console`). The sign-in page (`/console/login`)
takes a token, from the fragment of a login link (`/console/login#token=...`,
which never reaches a server log) or pasted into its form, checks it like any
bearer token, and sets the cookie for the token's remaining lifetime: `HttpOnly`
(no script reads it), `SameSite=Strict` (no other site's page sends it), `Secure`
over HTTPS, `Path=/console`. Where the console sits behind a proxy that signs
people in with the clinic's OIDC provider and forwards their token, the cookie is
not needed at all.

Every form post (an alert's acknowledgement) carries a CSRF token: an HMAC of the
session cookie under a key of the service (`csrf_token`), checked with
`check_csrf` when the credential came from the cookie. The router also checks
`Origin` / `Sec-Fetch-Site`; with `SameSite=Strict` that makes three defences.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

import jwt
from fastapi import HTTPException, Request

from shared.auth import AuthenticationFailed, AuthenticationUnavailable, Authenticator
from shared.identity import Principal


def derive_key(secret: str, purpose: str) -> bytes:
    """A key for one purpose from a service secret (domain separation: the secret's other uses are unaffected)."""
    return hmac.new(secret.encode(), f"schizodot:{purpose}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class ConsoleSessions:
    authenticator: Authenticator
    csrf_key: bytes
    cookie: str | None  # None: sign-in by cookie is off (a proxy forwards the bearer token)
    path: str = "/console"

    @property
    def enabled(self) -> bool:
        return bool(self.cookie) and any(self.path.startswith(p) or p.startswith(self.path)
                                         for p in self.authenticator.settings.cookie_paths)

    async def sign_in(self, token: str) -> tuple[Principal, int]:
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
        return who, max(0, int(expires) - int(time.time()))

    def cookie_header(self, request: Request, token: str, seconds: int) -> str:
        secure = "; Secure" if _https(request) else ""
        return f"{self.cookie}={token}; Max-Age={seconds}; Path={self.path}; HttpOnly; SameSite=Strict{secure}"

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
