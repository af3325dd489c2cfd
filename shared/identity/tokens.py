"""People's credentials: OIDC bearer tokens (JWT), and the settings that say how they are checked.

The signature is checked with PyJWT against a JWKS (a URL, fetched and cached by `PyJWKClient`, or a
file, re-read when it changes), and so are the issuer, audience, expiry and not-before (with
`leeway_seconds`). Only RS256 and ES256 are accepted, and the algorithm must be the one the key is
for, so `alg: none` and an HS256 token "signed" with the public key are refused. A token claiming a
lifetime longer than `max_token_lifetime_seconds` is refused too. The role and clinic come from
configurable claims. (`shared.identity.auth` turns every credential into a Principal.)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import jwt
import structlog
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.identity.errors import AuthenticationFailed, AuthenticationUnavailable
from shared.identity.principal import CredentialKind, Principal, Role, is_clinic_id

log = structlog.get_logger()

ALLOWED_ALGORITHMS = ("RS256", "ES256")


class AuthSettings(BaseSettings):
    """How people's tokens are checked (`SCHIZODOT_AUTH_*`). See docs/security.md, "Credentials"."""

    model_config = SettingsConfigDict(env_prefix="SCHIZODOT_AUTH_", extra="ignore", frozen=True)

    issuer: str | None = None  # the token's `iss`, exactly; unset: bearer tokens are refused
    audience: str | None = None  # the token's `aud` must contain it
    jwks_url: str | None = None  # the provider's JWKS endpoint (OIDC discovery's `jwks_uri`)
    jwks_file: Path | None = None  # or a JWKS file (Kubernetes Secret / ConfigMap, the embedded stack)
    algorithms: Annotated[tuple[str, ...], NoDecode] = ALLOWED_ALGORITHMS
    role_claim: str = "schizodot_role"  # a dotted path (e.g. `realm_access.roles`); a string or a list
    clinic_claim: str = "schizodot_clinic"
    name_claim: str = "name"
    leeway_seconds: int = Field(30, ge=0, le=300)
    # The longest lifetime a token may claim (`exp - iat`, or `exp - now` without `iat`): a stolen
    # token with a 10-year `exp` must not work for 10 years. Providers issue minutes to hours.
    max_token_lifetime_seconds: int = Field(12 * 3600, ge=60)
    jwks_cache_seconds: int = Field(300, ge=0)
    # A browser's server-side session id comes in this cookie, on paths under `cookie_paths`
    # only (pages a browser navigates to; their routers check Origin on writes); the
    # sessions themselves are the console's (services/results/console/sessions.py).
    session_cookie: str | None = None
    cookie_paths: Annotated[tuple[str, ...], NoDecode] = ()  # comma-separated in the environment

    @field_validator("algorithms", mode="before")
    @classmethod
    def _only_asymmetric(cls, value: object) -> object:
        if isinstance(value, str):
            value = tuple(part.strip() for part in value.split(",") if part.strip())
        unknown = set(value) - set(ALLOWED_ALGORITHMS)  # type: ignore[arg-type]
        if unknown:
            raise ValueError(f"only {', '.join(ALLOWED_ALGORITHMS)} are accepted, not {', '.join(sorted(unknown))}")
        return value

    @field_validator("cookie_paths", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @property
    def bearer_configured(self) -> bool:
        return bool(self.issuer and self.audience and (self.jwks_url or self.jwks_file))



class TokenVerifier:
    """Checks a JWT against the configured issuer, audience and JWKS."""

    def __init__(self, settings: AuthSettings) -> None:
        self._settings = settings
        self._client = (jwt.PyJWKClient(settings.jwks_url, cache_jwk_set=True, lifespan=settings.jwks_cache_seconds)
                        if settings.jwks_url else None)
        self._file_keys: dict[str, jwt.PyJWK] = {}
        self._file_stamp: tuple[float, int] | None = None

    def _keys_from_file(self) -> dict[str, jwt.PyJWK]:
        path = self._settings.jwks_file
        assert path is not None
        stat = path.stat()
        stamp = (stat.st_mtime, stat.st_size)
        if stamp != self._file_stamp:  # re-read on rotation
            keys = {}
            for data in json.loads(path.read_text()).get("keys", []):
                try:
                    key = jwt.PyJWK(data)
                except jwt.PyJWTError:
                    continue  # a key of a kind we do not accept
                if data.get("kid"):
                    keys[data["kid"]] = key
            self._file_keys, self._file_stamp = keys, stamp
        return self._file_keys

    def _signing_key(self, kid: str) -> jwt.PyJWK:
        if self._client is not None:
            try:
                return self._client.get_signing_key(kid)
            except jwt.PyJWKClientConnectionError as error:
                raise AuthenticationUnavailable(f"JWKS endpoint unreachable: {error}") from error
            except jwt.PyJWKClientError as error:
                raise AuthenticationFailed("unknown key id") from error
        key = self._keys_from_file().get(kid)
        if key is None:
            raise AuthenticationFailed("unknown key id")
        return key

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or AuthenticationFailed. Blocking (file or JWKS fetch): run off the loop."""
        settings = self._settings
        if not settings.bearer_configured:
            raise AuthenticationFailed("bearer tokens are not configured (SCHIZODOT_AUTH_*)")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise AuthenticationFailed("malformed token") from error
        algorithm, kid = header.get("alg"), header.get("kid")
        if algorithm not in settings.algorithms:
            raise AuthenticationFailed(f"algorithm {algorithm!r} not accepted")
        if not isinstance(kid, str) or not kid:
            raise AuthenticationFailed("no key id")
        key = self._signing_key(kid)
        if key.algorithm_name != algorithm:  # an RSA key never checks an ES256 token, nor the reverse
            raise AuthenticationFailed("the key is not for this algorithm")
        try:
            claims = jwt.decode(
                token, key.key, algorithms=[algorithm], audience=settings.audience, issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud", "sub"], "verify_signature": True},
            )
        except jwt.PyJWTError as error:
            raise AuthenticationFailed(type(error).__name__) from error
        # PyJWT has checked that exp and iat are numbers and iat is not in the future.
        lifetime = claims["exp"] - claims.get("iat", time.time())
        if lifetime > settings.max_token_lifetime_seconds:
            raise AuthenticationFailed(f"the token's lifetime ({lifetime:.0f} s) exceeds "
                                       f"SCHIZODOT_AUTH_MAX_TOKEN_LIFETIME_SECONDS")
        return claims

    def principal(self, claims: dict[str, Any]) -> Principal:
        settings = self._settings
        role = _single_role(claim_at(claims, settings.role_claim))
        clinic = claim_at(claims, settings.clinic_claim)
        if role is None or role is Role.PATIENT_LINK:
            raise AuthenticationFailed("the token names no SchizoDot role")
        if role is Role.OPERATOR:
            clinic = None  # operators see no clinic's data
        elif not is_clinic_id(clinic):
            raise AuthenticationFailed("the token names no clinic")
        name = claims.get(settings.name_claim)
        return Principal(subject=str(claims["sub"]), role=role, clinic_id=clinic, credential=CredentialKind.BEARER,
                         display_name=name if isinstance(name, str) else None)


def claim_at(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted path (`realm_access.roles`), or None."""
    value: Any = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _single_role(value: Any) -> Role | None:
    names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    roles = {Role(name) for name in names if isinstance(name, str) and name in Role._value2member_map_}
    return roles.pop() if len(roles) == 1 else None  # none, or several: not a SchizoDot principal

