"""Bearer tokens as a provider issues them: RS256 as well as ES256, roles under a dotted
claim and in a list, keys from a JWKS URL (fetched once and cached) or a JWKS file (re-read
when the file is rotated). Real keys, real JWTs, a real HTTP server for the JWKS URL."""

from __future__ import annotations

import http.server
import json
import os
import threading
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from shared.identity.errors import AuthenticationFailed
from shared.identity.principal import Role
from shared.identity.tokens import AuthSettings, TokenVerifier

ISSUER, AUDIENCE = "https://idp.example/realms/clinic", "schizodot"


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _jwk(private, kid: str, alg: str) -> dict:
    algorithm = jwt.algorithms.RSAAlgorithm if alg == "RS256" else jwt.algorithms.ECAlgorithm
    public = json.loads(algorithm.to_jwk(private.public_key()))
    return {**public, "kid": kid, "alg": alg, "use": "sig"}


def _token(private, kid: str, alg: str = "RS256", **claims) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dr-a", "exp": now + 600, "iat": now,
            "schizodot_role": "clinician", "schizodot_clinic": "clinic-a", **claims}
    return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})


def _write_jwks(path: Path, *keys: dict) -> None:
    path.write_text(json.dumps({"keys": list(keys)}))


def _file_verifier(path: Path, **settings) -> TokenVerifier:
    return TokenVerifier(AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_file=path, **settings))


def test_an_rs256_token_is_accepted_and_an_rs256_key_never_checks_an_es256_token(tmp_path):
    key = _rsa()
    jwks = tmp_path / "jwks.json"
    _write_jwks(jwks, _jwk(key, "rsa-1", "RS256"))
    verifier = _file_verifier(jwks)
    claims = verifier.verify(_token(key, "rsa-1"))
    assert verifier.principal(claims).role is Role.CLINICIAN and claims["sub"] == "dr-a"
    with pytest.raises(AuthenticationFailed, match="not for this algorithm"):
        verifier.verify(_token(ec.generate_private_key(ec.SECP256R1()), "rsa-1", alg="ES256"))
    with pytest.raises(AuthenticationFailed, match="InvalidSignatureError"):
        verifier.verify(_token(_rsa(), "rsa-1"))  # another key under the same key id


def test_roles_under_a_dotted_claim_and_in_a_list(tmp_path):
    key = _rsa()
    jwks = tmp_path / "jwks.json"
    _write_jwks(jwks, _jwk(key, "rsa-1", "RS256"))
    verifier = _file_verifier(jwks, role_claim="realm_access.roles", clinic_claim="org.clinic")
    keycloak_like = verifier.verify(_token(key, "rsa-1", schizodot_role=None,
                                           realm_access={"roles": ["offline_access", "clinic_admin"]},
                                           org={"clinic": "clinic-b"}))
    principal = verifier.principal(keycloak_like)
    assert principal.role is Role.CLINIC_ADMIN and principal.clinic_id == "clinic-b"
    single = verifier.principal(verifier.verify(_token(key, "rsa-1", realm_access={"roles": "clinician"},
                                                       org={"clinic": "clinic-b"})))
    assert single.role is Role.CLINICIAN
    for roles in (["clinician", "clinic_admin"], ["offline_access"], [], None):  # two roles, or none
        claims = verifier.verify(_token(key, "rsa-1", realm_access={"roles": roles}, org={"clinic": "clinic-b"}))
        with pytest.raises(AuthenticationFailed, match="names no SchizoDot role"):
            verifier.principal(claims)
    top_level = verifier.verify(_token(key, "rsa-1", org={"clinic": "clinic-b"}))  # schizodot_role is not the path
    with pytest.raises(AuthenticationFailed, match="names no SchizoDot role"):
        verifier.principal(top_level)


def test_a_rotated_jwks_file_is_read_again(tmp_path):
    old, new = _rsa(), _rsa()
    jwks = tmp_path / "jwks.json"
    _write_jwks(jwks, _jwk(old, "key-2026-01", "RS256"))
    verifier = _file_verifier(jwks)
    assert verifier.verify(_token(old, "key-2026-01"))["sub"] == "dr-a"
    with pytest.raises(AuthenticationFailed, match="unknown key id"):
        verifier.verify(_token(new, "key-2026-02"))
    _write_jwks(jwks, _jwk(new, "key-2026-02", "RS256"))  # the Secret rotated: the old key is gone
    stat = jwks.stat()
    os.utime(jwks, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new mtime even on coarse clocks
    assert verifier.verify(_token(new, "key-2026-02"))["sub"] == "dr-a"
    with pytest.raises(AuthenticationFailed, match="unknown key id"):
        verifier.verify(_token(old, "key-2026-01"))


class _JwksServer:
    """A JWKS endpoint that counts its fetches."""

    def __init__(self, keys: list[dict]) -> None:
        self.keys, self.fetches = keys, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                outer.fetches += 1
                body = json.dumps({"keys": outer.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_jwks_url_is_fetched_once_and_cached():
    key = _rsa()
    server = _JwksServer([_jwk(key, "rsa-1", "RS256")])
    try:
        verifier = TokenVerifier(AuthSettings(issuer=ISSUER, audience=AUDIENCE, jwks_url=server.url,
                                              jwks_cache_seconds=300))
        for _ in range(5):
            assert verifier.verify(_token(key, "rsa-1"))["sub"] == "dr-a"
        assert server.fetches == 1
        with pytest.raises(AuthenticationFailed, match="unknown key id"):
            verifier.verify(_token(_rsa(), "rsa-unknown"))
    finally:
        server.stop()
