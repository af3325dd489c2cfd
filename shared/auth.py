"""Authentication: who is calling, from whatever credential they bring.

Three kinds of credential, each turned into a `shared.identity.Principal`:

- **People**: OIDC bearer tokens (JWT). The signature is checked with PyJWT
  against a JWKS (a URL, fetched and cached by `PyJWKClient`, or a file, re-read
  when it changes), and so are the issuer, audience, expiry and not-before (with
  `leeway_seconds`). Only RS256 and ES256 are accepted, and the algorithm must be
  the one the key is for, so `alg: none` and an HS256 token "signed" with the
  public key are refused. A token claiming a lifetime longer than
  `max_token_lifetime_seconds` is refused too. The role and clinic come from
  configurable claims.
- **Systems**: API keys (`X-API-Key: sdk_<id>_<secret>`), stored in
  `SchizodotApiKeys` as a SHA-256 of the secret (the secret is 256 random bits,
  so a slow hash adds nothing), each with a name, a role, a clinic,
  created/revoked times and an optional expiry. A revoked or expired key is
  refused at once (no cache).
- **Patients**: one-time links (`Authorization: Bearer spl_<secret>`), stored in
  `SchizodotPatientLinks` the same way, bound to one clinic, one patient and one
  check-in (job), short-lived. `consume` is a conditional write that succeeds
  once: exactly one upload. A consumed link still reads its check-in's state
  (GET) until it expires; it never writes again.

Every failure is the same 401 `{"detail": "authentication required"}`: the reason
goes to the log (never the token), not to the caller. Authentication runs in a
middleware before routing, so without a credential every path, existing or not,
answers the same. `principal_dependency` and `allow` are the FastAPI
dependencies routes use; a role a route does not allow is the one 403.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Protocol
from urllib.parse import quote

import jwt
import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.dynamo import delete_queried, from_item, is_conditional_failure, items, to_item
from shared.identity import CredentialKind, Principal, Role, is_clinic_id
from shared.patients import ClinicPatientId, PatientKey

log = structlog.get_logger()

ALLOWED_ALGORITHMS = ("RS256", "ES256")
API_KEY_PREFIX = "sdk_"
LINK_PREFIX = "spl_"
UNAUTHENTICATED = {"detail": "authentication required"}
CHALLENGE = {"WWW-Authenticate": "Bearer"}
OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})
SAFE_METHODS = frozenset({"GET", "HEAD"})
# Roles an API key may carry: systems upload, read results or integrate an EHR; people
# administer and operators use the cluster's own credentials.
API_KEY_ROLES = (Role.UPLOADER, Role.CLINICIAN, Role.EHR_INTEGRATION)
_API_KEY = re.compile(r"^sdk_([0-9a-f]{16})_([A-Za-z0-9_-]{20,100})$")
_LINK = re.compile(r"^spl_[A-Za-z0-9_-]{20,100}$")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")

# The request being served, for audit records written anywhere below the route.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("schizodot_request_id", default=None)


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


class AuthenticationFailed(Exception):
    """The credential is missing or not valid; the reason is for the log only."""


class SessionEnded(AuthenticationFailed):
    """A browser session that is over: `why` is idle, expired or revoked (the sign-in page says so)."""

    def __init__(self, why: str) -> None:
        super().__init__(f"session ended: {why}")
        self.why = why


class SessionResolver(Protocol):
    async def resolve(self, session_id: str) -> Principal:
        """The person of a live session; SessionEnded / AuthenticationFailed otherwise."""


class AuthenticationUnavailable(Exception):
    """The credential could not be checked (the key store or the JWKS endpoint is down)."""


def sha256(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def now_epoch() -> int:
    return int(time.time())


def iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --- people: OIDC bearer tokens --------------------------------------------------------------


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


# --- systems: API keys -------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    role: Role
    clinic_id: str
    created_at: str
    created_by: str
    revoked_at: str | None = None
    expires_at: str | None = None  # ISO 8601 UTC; None: until revoked

    def view(self) -> dict[str, Any]:
        return {"key_id": self.key_id, "name": self.name, "role": self.role.value, "clinic_id": self.clinic_id,
                "created_at": self.created_at, "created_by": self.created_by, "revoked_at": self.revoked_at,
                "expires_at": self.expires_at}

    def expired(self, now: float | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= iso(time.time() if now is None else now)


class ApiKeyStore(Protocol):
    async def create(self, name: str, role: Role, clinic_id: str, created_by: str,
                     expires_in: int | None = None) -> tuple[ApiKey, str]:
        """A new key and its secret (`sdk_<id>_<secret>`), shown once and stored only hashed;
        refused from `expires_in` seconds on, when given."""

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        """The key and its secret's SHA-256."""

    async def list_for_clinic(self, clinic_id: str) -> list[ApiKey]: ...

    async def revoke(self, key_id: str, clinic_id: str) -> ApiKey | None:
        """Revoke a clinic's key (idempotent); None when the clinic has no such key."""


def new_api_key_secret() -> tuple[str, str, str]:
    """(key id, secret, the whole key)."""
    key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    return key_id, secret, f"{API_KEY_PREFIX}{key_id}_{secret}"


def new_api_key(name: str, role: Role, clinic_id: str, created_by: str,
                expires_in: int | None = None) -> tuple[ApiKey, str, str]:
    """(the key's record, its secret, the whole key) of a new key; every store makes them here."""
    key_id, secret, whole = new_api_key_secret()
    now = time.time()
    key = ApiKey(key_id, name, role, clinic_id, iso(now), created_by,
                 expires_at=iso(now + expires_in) if expires_in is not None else None)
    return key, secret, whole


def _api_key_of(item: dict[str, Any]) -> ApiKey:
    return ApiKey(item["key_id"], item["name"], Role(item["role"]), item["clinic_id"], item["created_at"],
                  item.get("created_by", ""), item.get("revoked_at"), item.get("expires_at"))


class DynamoApiKeys:
    """`ApiKeyStore` on the `SchizodotApiKeys` table (key `key_id`; GSI `clinic_id-created_at-index`)."""

    INDEX = "clinic_id-created_at-index"

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def create(self, name: str, role: Role, clinic_id: str, created_by: str,
                     expires_in: int | None = None) -> tuple[ApiKey, str]:
        key, secret, whole = new_api_key(name, role, clinic_id, created_by, expires_in)
        item = {k: v for k, v in key.view().items() if v is not None}
        item["secret_sha256"] = sha256(secret)
        await self._db.put_item(TableName=self._table, Item=to_item(item),
                                ConditionExpression="attribute_not_exists(key_id)")
        return key, whole

    async def find(self, key_id: str) -> tuple[ApiKey, str] | None:
        response = await self._db.get_item(TableName=self._table, Key={"key_id": {"S": key_id}}, ConsistentRead=True)
        if "Item" not in response:
            return None
        item = from_item(response["Item"])
        return _api_key_of(item), item["secret_sha256"]

    async def list_for_clinic(self, clinic_id: str) -> list[ApiKey]:
        request: dict[str, Any] = {"TableName": self._table, "IndexName": self.INDEX,
                                   "KeyConditionExpression": "clinic_id = :c",
                                   "ExpressionAttributeValues": {":c": {"S": clinic_id}}}
        return [_api_key_of(item) async for item in items(self._db, "query", **request)]

    async def revoke(self, key_id: str, clinic_id: str) -> ApiKey | None:
        try:
            response = await self._db.update_item(
                TableName=self._table, Key={"key_id": {"S": key_id}},
                UpdateExpression="SET revoked_at = if_not_exists(revoked_at, :now)",
                ConditionExpression="clinic_id = :c",
                ExpressionAttributeValues={":now": {"S": iso(time.time())}, ":c": {"S": clinic_id}},
                ReturnValues="ALL_NEW")
        except Exception as error:
            if is_conditional_failure(error):
                return None  # no such key, or another clinic's: the same answer
            raise
        return _api_key_of(from_item(response["Attributes"]))


# --- patients: one-time links ------------------------------------------------------------------


@dataclass(frozen=True)
class PatientLink:
    link_id: str  # SHA-256 of the secret
    clinic_id: str
    patient_id: ClinicPatientId  # the clinic's own id (links are stored under the PatientKey)
    job_id: str
    created_by: str
    expires_at: int  # epoch seconds (the table's TTL attribute)
    used_at: str | None = None

    def principal(self) -> Principal:
        return Principal(subject=f"link-{self.link_id[:16]}", role=Role.PATIENT_LINK, clinic_id=self.clinic_id,
                         credential=CredentialKind.PATIENT_LINK, patient_id=self.patient_id, job_id=self.job_id,
                         credential_id=self.link_id)


class PatientLinkStore(Protocol):
    async def issue(self, clinic_id: str, patient_id: str, job_id: str, created_by: str,
                    expires_in: int) -> tuple[PatientLink, str]:
        """A new link and its token (`spl_<secret>`), shown once and stored only hashed."""

    async def find(self, link_id: str) -> PatientLink | None: ...

    async def consume(self, link_id: str) -> bool:
        """Mark the link used; True exactly once (a conditional write), False if used or expired."""

    async def count_for_patient(self, patient_key: PatientKey) -> int: ...

    async def delete_for_patient(self, patient_key: PatientKey) -> int:
        """Erasure: remove every link of a patient; how many there were."""


def new_link_token() -> tuple[str, str]:
    token = LINK_PREFIX + secrets.token_urlsafe(32)
    return sha256(token), token


def _link_of(item: dict[str, Any]) -> PatientLink:
    stored = PatientKey.parse(item["patient_key"])
    clinic, local = stored.clinic_id, stored.patient
    return PatientLink(item["link_id"], clinic or item["clinic_id"], local, item["job_id"], item.get("created_by", ""),
                       int(item["expires_at"]), item.get("used_at"))


class DynamoPatientLinks:
    """`PatientLinkStore` on `SchizodotPatientLinks` (key `link_id`; GSI `patient_key-index`; TTL `expires_at`)."""

    INDEX = "patient_key-index"

    def __init__(self, dynamodb: Any, table: str) -> None:
        self._db = dynamodb
        self._table = table

    async def issue(self, clinic_id: str, patient_id: str, job_id: str, created_by: str,
                    expires_in: int) -> tuple[PatientLink, str]:
        link_id, token = new_link_token()
        link = PatientLink(link_id, clinic_id, patient_id, job_id, created_by, now_epoch() + expires_in)
        await self._db.put_item(TableName=self._table, Item=to_item({
            "link_id": link_id, "clinic_id": clinic_id, "patient_key": str(PatientKey.of(clinic_id, patient_id)),
            "job_id": job_id, "created_by": created_by, "created_at": iso(time.time()),
            "expires_at": link.expires_at}), ConditionExpression="attribute_not_exists(link_id)")
        return link, token

    async def find(self, link_id: str) -> PatientLink | None:
        response = await self._db.get_item(TableName=self._table, Key={"link_id": {"S": link_id}},
                                           ConsistentRead=True)
        return _link_of(from_item(response["Item"])) if "Item" in response else None

    async def consume(self, link_id: str) -> bool:
        try:
            await self._db.update_item(
                TableName=self._table, Key={"link_id": {"S": link_id}}, UpdateExpression="SET used_at = :now",
                ConditionExpression="attribute_exists(link_id) AND attribute_not_exists(used_at) AND expires_at > :epoch",
                ExpressionAttributeValues={":now": {"S": iso(time.time())}, ":epoch": {"N": str(now_epoch())}})
            return True
        except Exception as error:
            if is_conditional_failure(error):
                return False
            raise

    async def count_for_patient(self, patient_key: PatientKey) -> int:
        response = await self._db.query(TableName=self._table, IndexName=self.INDEX, Select="COUNT",
                                        KeyConditionExpression="patient_key = :p",
                                        ExpressionAttributeValues={":p": {"S": str(PatientKey.parse(patient_key))}})
        return int(response.get("Count", 0))

    async def delete_for_patient(self, patient_key: PatientKey) -> int:
        return await delete_queried(self._db, self._table, {
            "IndexName": self.INDEX, "KeyConditionExpression": "patient_key = :p",
            "ExpressionAttributeValues": {":p": {"S": str(PatientKey.parse(patient_key))}}}, ("link_id",))


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
        match = _API_KEY.match(presented.strip())
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
        if not _LINK.match(token) or self.links is None:
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


# --- FastAPI ---------------------------------------------------------------------------------


def unauthenticated_response() -> JSONResponse:
    return JSONResponse(status_code=401, content=UNAUTHENTICATED, headers=CHALLENGE)


def install_authentication(app: FastAPI, authenticator: Authenticator, *, open_paths: Iterable[str] = OPEN_PATHS,
                           open_prefixes: Iterable[str] = (), login_pages: dict[str, str] | None = None) -> None:
    """Every path but the open ones needs a credential, checked before routing and validation,
    so a caller without one learns nothing (not even whether a route or a job exists).
    Also gives each request an id (`X-Request-ID`, kept if the caller sent a well-formed one).

    `login_pages` ({path prefix: sign-in page}): a browser asking for a page under the prefix
    without a valid credential is sent to the sign-in page instead of a 401 (the same answer
    for every path under it, existing or not)."""
    exact, prefixes = frozenset(open_paths), tuple(open_prefixes)
    logins = dict(login_pages or {})

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        incoming = request.headers.get("x-request-id", "")
        request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(12)
        token = request_id_var.set(request_id)
        try:
            path = request.url.path
            if not (path in exact or (prefixes and path.startswith(prefixes))):
                try:
                    request.state.principal = await authenticator.authenticate(request)
                except AuthenticationFailed as error:
                    log.info("request not authenticated", reason=str(error), path=_route_shape(app, path))
                    login = next((page for prefix, page in logins.items() if path.startswith(prefix)), None)
                    if login and request.method in SAFE_METHODS and "text/html" in request.headers.get("accept", ""):
                        ended = f"&ended={error.why}" if isinstance(error, SessionEnded) else ""
                        response = RedirectResponse(f"{login}?next={quote(path, safe='/')}{ended}", status_code=303)
                        response.headers["X-Request-ID"] = request_id
                        return response
                    response = unauthenticated_response()
                    response.headers["X-Request-ID"] = request_id
                    return response
                except AuthenticationUnavailable as error:
                    log.error("credential could not be checked", error=str(error))
                    return JSONResponse(status_code=503, content={"detail": "authentication is unavailable; try again"},
                                        headers={"Retry-After": "5", "X-Request-ID": request_id})
            response = await call_next(request)
            response.headers["X-Request-ID"] = request_id
            return response
        finally:
            request_id_var.reset(token)


def _route_shape(app: FastAPI, path: str) -> str:
    """A path for the log with every segment that is not a word of the app's own routes
    (`/api/v1/patients/{patient_id}/results` gives api, v1, patients, results) replaced: a
    patient id may have any shape, all letters included (PHI)."""
    words = getattr(app.state, "route_words", None)
    if words is None:  # the routes are all declared by the first request
        words = app.state.route_words = frozenset(_static_segments(app.router.routes))
    return "/".join(part if not part or part in words else "…" for part in path.split("/"))


def _static_segments(routes: Iterable[Any]) -> Iterable[str]:
    for route in routes:
        for template in (getattr(route, "path", None),
                         getattr(getattr(route, "include_context", None), "prefix", None)):
            if isinstance(template, str):
                yield from (part for part in template.split("/") if part and "{" not in part)
        nested = getattr(getattr(route, "original_router", route), "routes", None)  # included routers, mounts
        if isinstance(nested, list):
            yield from _static_segments(nested)


def principal_dependency(authenticator: Authenticator) -> Callable[[Request], Awaitable[Principal]]:
    """A FastAPI dependency returning the caller's `Principal` (401 without a valid credential).

    Behind `install_authentication` it returns what the middleware found; mounted
    elsewhere it authenticates the request itself."""

    async def principal(request: Request) -> Principal:
        found = getattr(request.state, "principal", None)
        if isinstance(found, Principal):
            return found
        try:
            found = await authenticator.authenticate(request)
        except AuthenticationFailed as error:
            raise HTTPException(status_code=401, detail=UNAUTHENTICATED["detail"], headers=CHALLENGE) from error
        except AuthenticationUnavailable as error:
            raise HTTPException(status_code=503, detail="authentication is unavailable; try again",
                                headers={"Retry-After": "5"}) from error
        request.state.principal = found
        return found

    return principal


FORBIDDEN = "your role may not call this route"


def allow(principal: Callable[..., Awaitable[Principal]], *roles: Role) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, if its role may call the route; 403 otherwise (the only 403)."""
    from fastapi import Depends

    allowed = frozenset(roles)

    async def check(who: Principal = Depends(principal)) -> Principal:
        if who.role not in allowed:
            raise HTTPException(status_code=403, detail=FORBIDDEN)
        return who

    return check
