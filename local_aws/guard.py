"""The checks AWS makes before a service sees a request, which moto's server does not make."""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import io
import json
import time
import urllib.parse
from typing import Any, Callable, Iterable

from local_aws.request import PostForm, is_post_upload, read_body

MAX_CLOCK_SKEW_SECONDS = 15 * 60  # AWS refuses a signed request older (or newer) than this
_SIGNED_PREFIX = "AWS4-HMAC-SHA256 "


class AccessGuard:
    """WSGI middleware in front of moto: what AWS checks and moto's server does not.

    - Every request is signed with the configured credentials (SigV4: an
      Authorization header, a presigned URL's query, or a presigned POST's
      policy), and is neither stale nor expired; anything else is 403.
    - A presigned POST keeps to its policy's conditions (bucket, key, content
      type, size), as S3 checks them.
    - No CORS for any other origin: moto's server answers every origin
      (flask-cors), so any web page open on the machine could read and write
      through it. Its Access-Control-* headers are removed; only the origins
      named in `browser_origins` (SCHIZODOT_BROWSER_ORIGINS: the stack's own
      patient page, which still sends its parts here with presigned URLs) get
      a preflight answered and their origin allowed; any other is refused.
    - moto's management API (/moto-api: reset, state, dashboard) is refused.

    Why not moto's own check (INITIAL_NO_AUTH_ACTION_COUNT): it accepts only
    access keys made through its IAM API (random secrets, held in memory), needs
    IAM policies for every caller, and does not check presigned URLs or POSTs.
    """

    def __init__(self, inner: Any, access_key: str, secret_key: str, browser_origins: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.time) -> None:
        if not access_key or not secret_key:
            raise ValueError("the AWS server needs an access key and a secret key to check signatures against")
        self.inner = inner
        self.access_key = access_key
        self.secret_key = secret_key
        self.browser_origins = browser_origins
        self.clock = clock

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith("/moto-api"):
            return _refuse(environ, start_response, "AccessDenied", "moto's management API is not served here")
        origin = environ.get("HTTP_ORIGIN", "")
        allowed = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")] \
            if origin and origin in self.browser_origins else []
        if environ.get("REQUEST_METHOD", "").upper() == "OPTIONS":
            if not allowed:
                return _refuse(environ, start_response, "AccessDenied", "cross-origin requests are not served")
            start_response("200 OK", [*allowed, ("Access-Control-Allow-Methods", "GET, HEAD, PUT, POST"),
                                      ("Access-Control-Allow-Headers",
                                       environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")),
                                      ("Access-Control-Max-Age", "600"), ("Content-Length", "0")])
            return [b""]
        declared_length = environ.get("CONTENT_LENGTH", "")
        body = read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        problem = self.problem(environ, body, declared_length)
        if problem is not None:
            return _refuse(environ, start_response, *problem)

        def without_cors(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [(name, value) for name, value in headers
                                           if not name.lower().startswith("access-control-")] + allowed, exc_info)

        return self.inner(environ, without_cors)

    def problem(self, environ: dict[str, Any], body: bytes, declared_length: str) -> tuple[str, str] | None:
        """(code, message) when the request must be refused; None when it is signed and in date."""
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if authorization.startswith(_SIGNED_PREFIX):
            return self._header_problem(environ, body, authorization, declared_length)
        if "X-Amz-Signature" in query:
            return self._query_problem(environ, query, declared_length)
        if is_post_upload(environ.get("REQUEST_METHOD", ""), environ.get("QUERY_STRING", ""),
                           environ.get("CONTENT_TYPE", "")):
            return self._post_problem(environ, body)
        return "AccessDenied", "the request is not signed (AWS Signature Version 4 is required)"

    def _header_problem(self, environ: dict[str, Any], body: bytes, authorization: str,
                        declared_length: str) -> tuple[str, str] | None:
        fields = dict(part.strip().partition("=")[::2] for part in authorization[len(_SIGNED_PREFIX):].split(","))
        scope = fields.get("Credential", "").split("/")
        if len(scope) != 5 or not hmac.compare_digest(scope[0], self.access_key):
            return "InvalidAccessKeyId", "the access key is not this server's"
        timestamp = environ.get("HTTP_X_AMZ_DATE", "")
        stale = self._stale(timestamp)
        if stale:
            return "RequestTimeTooSkewed", stale
        signed = [name for name in fields.get("SignedHeaders", "").split(";") if name]
        expected = self._signature(environ, _raw_uri(environ), signed, scope, timestamp, declared_length, body)
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "SignatureDoesNotMatch", "the request's signature does not match its content and credentials"
        return None

    def _query_problem(self, environ: dict[str, Any], query: dict[str, list[str]],
                       declared_length: str) -> tuple[str, str] | None:
        first = {name: values[0] for name, values in query.items()}
        scope = first.get("X-Amz-Credential", "").split("/")
        if first.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or len(scope) != 5 \
                or not hmac.compare_digest(scope[0], self.access_key):
            return "InvalidAccessKeyId", "the access key is not this server's"
        timestamp, expires = first.get("X-Amz-Date", ""), first.get("X-Amz-Expires", "")
        signed_at = _parse_amz_date(timestamp)
        if signed_at is None or not expires.isdigit():
            return "AccessDenied", "the presigned URL has no valid date or lifetime"
        if self.clock() > signed_at + int(expires):
            return "AccessDenied", "the presigned URL has expired"
        if signed_at > self.clock() + MAX_CLOCK_SKEW_SECONDS:
            return "RequestTimeTooSkewed", "the presigned URL is dated in the future"
        path, _, raw_query = _raw_uri(environ).partition("?")
        unsigned = "&".join(pair for pair in raw_query.split("&") if not pair.startswith("X-Amz-Signature="))
        signed = [name for name in first.get("X-Amz-SignedHeaders", "").split(";") if name]
        expected = self._signature(environ, f"{path}?{unsigned}", signed, scope, timestamp, declared_length, b"",
                                   presigned_for=int(expires))
        if not hmac.compare_digest(expected, first.get("X-Amz-Signature", "")):
            return "SignatureDoesNotMatch", "the presigned URL's signature does not match"
        return None

    def _post_problem(self, environ: dict[str, Any], body: bytes) -> tuple[str, str] | None:
        form = PostForm.parse(environ.get("CONTENT_TYPE", ""), body)
        scope = form.fields.get("x-amz-credential", "").split("/")
        if form.fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256" or len(scope) != 5 \
                or not hmac.compare_digest(scope[0], self.access_key):
            return "InvalidAccessKeyId", "the form's access key is not this server's"
        policy_text = form.fields.get("policy", "")
        key = _signing_key(self.secret_key, scope[1], scope[2], scope[3])
        expected = hmac.new(key, policy_text.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, form.fields.get("x-amz-signature", "")):
            return "SignatureDoesNotMatch", "the form's policy signature does not match"
        try:
            policy = json.loads(base64.b64decode(policy_text))
            expiration = calendar.timegm(time.strptime(policy["expiration"][:19], "%Y-%m-%dT%H:%M:%S"))
        except (ValueError, KeyError, TypeError):
            return "InvalidPolicyDocument", "the form's policy cannot be read"
        if self.clock() > expiration:
            return "AccessDenied", "the form's policy has expired"
        bucket = (environ.get("PATH_INFO", "") or "/").lstrip("/").partition("/")[0]
        broken = form.broken_condition(policy.get("conditions") or [], bucket)
        return ("AccessDenied", f"the upload breaks its policy: {broken}") if broken else None

    def _stale(self, timestamp: str) -> str | None:
        signed_at = _parse_amz_date(timestamp)
        if signed_at is None:
            return "the request has no X-Amz-Date"
        if abs(self.clock() - signed_at) > MAX_CLOCK_SKEW_SECONDS:
            return "the request's date is more than 15 minutes from the server's clock"
        return None

    def _signature(self, environ: dict[str, Any], uri: str, signed: list[str], scope: list[str], timestamp: str,
                   declared_length: str, body: bytes, presigned_for: int | None = None) -> str:
        """The signature this server would make for the request (botocore's SigV4, moto's dependency)."""
        from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        headers = {name: _header(environ, name, declared_length) for name in signed}
        host = environ.get("HTTP_HOST", "localhost")
        request = AWSRequest(method=environ.get("REQUEST_METHOD", "GET").upper(), url=f"http://{host}{uri}",
                             headers=headers, data=body)
        request.context["timestamp"] = timestamp
        credentials = Credentials(self.access_key, self.secret_key)
        _, _, region, service, _ = scope
        if presigned_for is not None:
            auth: Any = S3SigV4QueryAuth(credentials, service, region, expires=presigned_for)
        elif service == "s3":
            auth = S3SigV4Auth(credentials, service, region)
        else:
            auth = SigV4Auth(credentials, service, region)
        canonical = auth.canonical_request(request)
        return auth.signature(auth.string_to_sign(request, canonical), request)


def _refuse(environ: dict[str, Any], start_response: Any, code: str, message: str) -> list[bytes]:
    """403 in the shape the caller's protocol reads (JSON for X-Amz-Target APIs, XML for S3 and query APIs)."""
    status = "400 Bad Request" if code == "InvalidPolicyDocument" else "403 Forbidden"
    if environ.get("HTTP_X_AMZ_TARGET") or "json" in environ.get("CONTENT_TYPE", ""):
        start_response(status, [("Content-Type", "application/x-amz-json-1.0")])
        return [json.dumps({"__type": code, "message": message}).encode()]
    start_response(status, [("Content-Type", "application/xml")])
    return [f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message>"
            f"</Error>".encode()]


def _header(environ: dict[str, Any], name: str, declared_length: str) -> str:
    if name == "content-length":
        return declared_length
    if name == "content-type":
        return environ.get("CONTENT_TYPE", "")
    return environ.get("HTTP_" + name.upper().replace("-", "_"), "")


def _raw_uri(environ: dict[str, Any]) -> str:
    """The path and query as the client sent them (signatures cover the encoded form)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    query = environ.get("QUERY_STRING", "")
    return urllib.parse.quote(environ.get("PATH_INFO", "") or "/") + (f"?{query}" if query else "")


def _parse_amz_date(text: str) -> float | None:
    try:
        return calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key
