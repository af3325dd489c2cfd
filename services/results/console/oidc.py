"""Signing clinicians in with their organisation's OpenID Provider (docs/sign-in.md).

The authorization code flow with PKCE (S256), by Authlib's OAuth 2 client:

1. `start`: the provider's endpoints come from its discovery document
   (`<issuer>/.well-known/openid-configuration`, whose `issuer` must be the configured
   one); a fresh `state`, `nonce` and PKCE verifier are kept server-side (sessions.py's
   `LoginAttempt`, under the state's hash, bound to the browser by a cookie) and the
   browser goes to the provider.
2. `finish`, at the callback: the attempt is taken once (a tampered or replayed `state`
   finds nothing), the browser must be the one that started it, the code is exchanged
   with the verifier and the client's secret (a replayed code is refused by the
   provider), and the ID token is checked by shared.identity.auth's `TokenVerifier`, as every
   token is (RS256/ES256 only, the provider's JWKS, issuer, audience = the client id,
   expiry); then its `nonce` must be this attempt's, and, where the clinic requires it,
   `amr` or `acr` must assert a second factor.
3. `principal`: the person's role comes from the clinic's `role_claim` through its
   `roles` map (clinic_admin wins over clinician); no mapped value: refused, saying why.

Every refusal is a `SignInRefused` with a `reason` for the audit trail and words for the person.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx
import structlog
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client, OAuthError

from services.results.console.session_store import LoginAttempt, SessionStore
from services.results.console.sessions import LOGIN_SECONDS
from shared.domain.clinics import SignInProvider
from shared.identity.errors import AuthenticationFailed, AuthenticationUnavailable
from shared.identity.principal import CredentialKind, Principal, Role
from shared.identity.tokens import AuthSettings, TokenVerifier, claim_at

log = structlog.get_logger()

DISCOVERY_SECONDS = 3600  # a provider's discovery document is fetched again after this
_TOKEN_PROBLEMS = {
    "InvalidAudienceError": "it was issued to another application",
    "InvalidIssuerError": "it comes from another issuer",
    "ExpiredSignatureError": "it has expired",
    "ImmatureSignatureError": "it is not valid yet",
}


class SignInRefused(Exception):
    def __init__(self, reason: str, message: str, status: int = 401, subject: str | None = None) -> None:
        super().__init__(message)
        self.reason, self.message, self.status, self.subject = reason, message, status, subject


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class OidcSignIn:
    def __init__(self, store: SessionStore, *, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._http = http
        self._clock = clock
        self._metadata: dict[str, tuple[float, dict[str, Any]]] = {}
        self._verifiers: dict[tuple[str, str, str], TokenVerifier] = {}

    async def metadata(self, provider: SignInProvider) -> dict[str, Any]:
        cached = self._metadata.get(provider.issuer)
        if cached and cached[0] > self._clock():
            return cached[1]
        url = provider.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=10) if self._http is None else _borrowed(self._http) as http:
                response = await http.get(url)
            response.raise_for_status()
            document = response.json()
        except (httpx.HTTPError, ValueError) as error:
            log.warning("provider discovery failed", provider=provider.id, error=type(error).__name__)
            raise SignInRefused("discovery", f"{provider.name} cannot be reached just now; try again in a "
                                             "moment.", 503) from error
        if document.get("issuer") != provider.issuer:
            raise SignInRefused("discovery", f"{provider.name}'s discovery document names another issuer; "
                                             "ask your clinic's administrator to check the issuer setting.", 503)
        missing = [k for k in ("authorization_endpoint", "token_endpoint", "jwks_uri") if not document.get(k)]
        methods = document.get("code_challenge_methods_supported")
        if missing or (methods is not None and "S256" not in methods):
            raise SignInRefused("discovery", f"{provider.name} does not offer what this console needs "
                                             f"({', '.join(missing) or 'PKCE with S256'}).", 503)
        self._metadata[provider.issuer] = (self._clock() + DISCOVERY_SECONDS, document)
        return document

    def _verifier(self, provider: SignInProvider, jwks_uri: str) -> TokenVerifier:
        key = (provider.issuer, provider.client_id, jwks_uri)
        if key not in self._verifiers:
            self._verifiers[key] = TokenVerifier(AuthSettings(
                issuer=provider.issuer, audience=provider.client_id, jwks_url=jwks_uri))
        return self._verifiers[key]

    def _client(self, provider: SignInProvider, redirect_uri: str) -> AsyncOAuth2Client:
        try:
            secret = provider.client_secret()
        except (OSError, ValueError) as error:
            log.error("sign-in provider has no client secret", provider=provider.id, error=str(error))
            raise SignInRefused("configuration", f"Sign-in with {provider.name} is not set up completely "
                                                 "(its client secret is missing); tell your clinic's "
                                                 "administrator.", 503) from error
        return AsyncOAuth2Client(client_id=provider.client_id, client_secret=secret, scope=" ".join(provider.scopes),
                                 redirect_uri=redirect_uri, code_challenge_method="S256", timeout=15)

    async def start(self, clinic_id: str, provider: SignInProvider, redirect_uri: str,
                    next_path: str) -> tuple[str, str]:
        """(the provider's authorization URL, the browser-binding cookie's value)."""
        document = await self.metadata(provider)
        state, nonce, verifier = secrets.token_urlsafe(32), secrets.token_urlsafe(32), generate_token(64)
        browser = secrets.token_urlsafe(32)
        extra = {"acr_values": " ".join(provider.mfa_acr)} if provider.require_mfa and provider.mfa_acr else {}
        async with self._client(provider, redirect_uri) as client:
            url, _ = client.create_authorization_url(document["authorization_endpoint"], state=state, nonce=nonce,
                                                     code_verifier=verifier, **extra)
        await self._store.put_login(LoginAttempt(
            state_hash=_hash(state), clinic_id=clinic_id, provider_id=provider.id, nonce=nonce,
            code_verifier=verifier, browser_hash=_hash(browser), next_path=next_path,
            expires_at=int(self._clock()) + LOGIN_SECONDS))
        return url, browser

    async def take(self, state: str, browser: str | None) -> LoginAttempt:
        """The sign-in this callback belongs to, taken once."""
        attempt = await self._store.take_login(_hash(state)) if state else None
        if attempt is None or attempt.expires_at <= self._clock():
            raise SignInRefused("state", "This sign-in cannot be completed: it is unknown, took too long or was "
                                         "used already. Start again from the sign-in page.", 400)
        if not browser or not secrets.compare_digest(_hash(browser), attempt.browser_hash):
            raise SignInRefused("browser", "This sign-in was started in another browser. Start again from the "
                                           "sign-in page.", 400)
        return attempt

    async def finish(self, attempt: LoginAttempt, provider: SignInProvider, code: str,
                     redirect_uri: str) -> dict[str, Any]:
        """The verified claims of the ID token this code is exchanged for."""
        document = await self.metadata(provider)
        try:
            async with self._client(provider, redirect_uri) as client:
                token = await client.fetch_token(document["token_endpoint"], grant_type="authorization_code",
                                                 code=code, code_verifier=attempt.code_verifier)
        except OAuthError as error:
            log.info("provider refused the code", provider=provider.id, error=error.error)
            raise SignInRefused("code", f"{provider.name} did not accept this sign-in (its code was used already "
                                        "or has expired). Start again from the sign-in page.") from error
        except httpx.HTTPError as error:
            raise SignInRefused("token_endpoint", f"{provider.name} cannot be reached just now; try again.",
                                503) from error
        id_token = token.get("id_token")
        if not isinstance(id_token, str):
            raise SignInRefused("id_token", f"{provider.name} sent no identity token; ask your clinic's "
                                            "administrator to check that the openid scope is allowed.")
        verifier = self._verifier(provider, document["jwks_uri"])
        try:
            claims = await asyncio.get_running_loop().run_in_executor(None, verifier.verify, id_token)
        except AuthenticationUnavailable as error:
            raise SignInRefused("jwks", f"{provider.name}'s keys cannot be fetched just now; try again.",
                                503) from error
        except AuthenticationFailed as error:
            problem = _TOKEN_PROBLEMS.get(str(error), "its signature or claims do not check out")
            raise SignInRefused(f"id_token:{error}", f"The identity token from {provider.name} is not valid for "
                                                     f"this console: {problem}. Start again, or ask your clinic's "
                                                     "administrator to check the provider settings.") from error
        audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
        if len(audiences) > 1 and claims.get("azp") != provider.client_id:
            raise SignInRefused("id_token:azp", f"The identity token from {provider.name} was issued to another "
                                                "application. Start again.")
        if not isinstance(claims.get("nonce"), str) or not secrets.compare_digest(claims["nonce"], attempt.nonce):
            raise SignInRefused("nonce", "The identity token does not belong to this sign-in (its nonce differs). "
                                         "Start again from the sign-in page.", subject=self.subject(provider, claims))
        if provider.require_mfa and not mfa_asserted(provider, claims):
            raise SignInRefused("mfa", f"Your clinic requires multi-factor authentication for the console, and "
                                       f"{provider.name} did not confirm a second factor for this sign-in. Sign in "
                                       "again using your second factor (app, key or code).", 403,
                                subject=self.subject(provider, claims))
        return claims

    @staticmethod
    def subject(provider: SignInProvider, claims: dict[str, Any]) -> str:
        return f"{provider.id}:{claims['sub']}"  # two providers of a clinic may both have an "alice"

    def principal(self, clinic_id: str, clinic_name: str, provider: SignInProvider,
                  claims: dict[str, Any]) -> Principal:
        role = mapped_role(provider, claims)
        name = claims.get(provider.name_claim)
        display = name if isinstance(name, str) and name.strip() else None
        if role is None:
            raise SignInRefused(
                "no_role", f"You signed in as {display or claims['sub']}, but your account has no role in the "
                           f"console of {clinic_name}: none of its “{provider.role_claim}” values is one that "
                           "this clinic gives clinicians or clinic admins. Ask your clinic's administrator for "
                           "access.", 403, subject=self.subject(provider, claims))
        return Principal(subject=self.subject(provider, claims), role=role, clinic_id=clinic_id,
                         credential=CredentialKind.SESSION, display_name=display)


def mapped_role(provider: SignInProvider, claims: dict[str, Any]) -> Role | None:
    value = claim_at(claims, provider.role_claim)
    values = {value} if isinstance(value, str) else {v for v in value if isinstance(v, str)} \
        if isinstance(value, list) else set()
    for role in (Role.CLINIC_ADMIN, Role.CLINICIAN):  # an admin is a clinician too
        if values & set(provider.roles.get(role.value, ())):
            return role
    return None


def mfa_asserted(provider: SignInProvider, claims: dict[str, Any]) -> bool:
    amr = claims.get("amr")
    methods = {m for m in amr if isinstance(m, str)} if isinstance(amr, list) else set()
    return bool(methods & set(provider.mfa_amr)) or (bool(provider.mfa_acr) and claims.get("acr") in provider.mfa_acr)


class _borrowed:
    """A shared httpx client used in `async with` without closing it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def __aenter__(self) -> httpx.AsyncClient:
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        return None
