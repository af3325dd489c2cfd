"""Finding 11 of issue 19: a bearer token claiming a lifetime beyond the cap
(SCHIZODOT_AUTH_MAX_TOKEN_LIFETIME_SECONDS) is refused, and an API key created with an
expiry is refused from then on. Real tokens (the development issuer's ES256 key), checked
by the results API as in the service."""

from __future__ import annotations

import time

import jwt
from cryptography.hazmat.primitives import serialization
from fastapi.testclient import TestClient

from schizodot.dev_identity import AUDIENCE, ISSUER
from services.results.console.tests.fakes import Console

TEN_YEARS = 10 * 365 * 24 * 3600
RESULTS = "/api/v1/patients/patient-101/results"


def _signed_without_iat(console: Console, exp: int) -> str:
    """A token of the issuer's key that states no `iat`: its lifetime counts from now."""
    issuer = console.issuer
    key = serialization.load_pem_private_key(issuer.key_path.read_bytes(), password=None)
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "dr-north", "exp": exp, "schizodot_role": "clinician",
              "schizodot_clinic": "clinic-north"}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": issuer.kid})


def test_token_lifetime_cap_refuses_a_ten_year_bearer_token(tmp_path):
    console = Console(tmp_path)
    with TestClient(console.app) as http:
        ordinary = http.get(RESULTS, headers={"Authorization": f"Bearer {console.token('north')}"})
        assert ordinary.status_code != 401  # an hour is fine
        for token in (console.token("north", exp=int(time.time()) + TEN_YEARS),  # exp - iat: ten years
                      _signed_without_iat(console, int(time.time()) + TEN_YEARS)):  # exp - now: ten years
            refused = http.get(RESULTS, headers={"Authorization": f"Bearer {token}"})
            assert refused.status_code == 401 and refused.json() == {"detail": "authentication required"}
        # the console's sign-in takes the same check: no cookie for a ten-year token
        signed_in = http.post("/console/login", data={"token": console.token("north", exp=int(time.time()) + TEN_YEARS)},
                              headers={"Origin": "http://testserver"}, follow_redirects=False)
        assert signed_in.status_code == 401 and "set-cookie" not in signed_in.headers


def test_token_lifetime_cap_is_configurable(tmp_path, monkeypatch):
    from shared.identity.errors import AuthenticationFailed
    from shared.identity.tokens import AuthSettings, TokenVerifier

    console = Console(tmp_path)
    settings = console.authenticator.settings.model_copy(update={"max_token_lifetime_seconds": 600})
    verifier = TokenVerifier(settings)
    assert verifier.verify(console.token("north", exp=int(time.time()) + 500))["sub"]
    try:
        verifier.verify(console.token("north", exp=int(time.time()) + 700))
    except AuthenticationFailed as error:
        assert "lifetime" in str(error)
    else:
        raise AssertionError("a token over the configured cap was accepted")
    monkeypatch.setenv("SCHIZODOT_AUTH_MAX_TOKEN_LIFETIME_SECONDS", "900")
    assert AuthSettings().max_token_lifetime_seconds == 900


def test_token_lifetime_api_key_with_an_expiry_is_refused_after_it(tmp_path, monkeypatch):
    console = Console(tmp_path)
    with TestClient(console.app) as http:
        admin = {"Authorization": f"Bearer {console.token('north-admin')}"}
        created = http.post("/api/v1/api-keys", headers=admin,
                            json={"name": "ehr bridge", "role": "clinician", "expires_in": 3600})
        assert created.status_code == 201, created.text
        key = created.json()
        assert key["expires_at"] and key["expires_at"] > key["created_at"]
        forever = http.post("/api/v1/api-keys", headers=admin, json={"name": "app", "role": "clinician"}).json()
        assert forever["expires_at"] is None
        assert http.get(RESULTS, headers={"X-API-Key": key["api_key"]}).status_code != 401
        later = time.time() + 3601
        monkeypatch.setattr(time, "time", lambda: later)
        assert http.get(RESULTS, headers={"X-API-Key": key["api_key"]}).status_code == 401
        assert http.get(RESULTS, headers={"X-API-Key": forever["api_key"]}).status_code != 401
