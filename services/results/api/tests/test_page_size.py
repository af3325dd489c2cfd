"""The page size a deployment configures (RESULTS_API_MAX_PAGE_SIZE) is the one its routes enforce and the
one its OpenAPI schema names, on in-memory adapters with a real signed token."""

from __future__ import annotations

from fastapi.testclient import TestClient

from schizodot.dev_identity import DevIssuer
from services.results.api import ResultsAccess, create_app
from services.results.erasure import MemoryErasures
from services.results.settings import ResultsSettings
from shared.fakes import InMemoryApiKeys, InMemoryHistory, InMemoryJobs, InMemoryPatientLinks, MemoryAuditStore
from shared.identity.audit import AuditTrail
from shared.identity.auth import Authenticator
from shared.identity.tokens import AuthSettings

PAGED = ("/api/v1/patients/{patient_id}/jobs", "/api/v1/patients/{patient_id}/results", "/api/v1/audit")


def _client(tmp_path, max_page_size: int) -> tuple[TestClient, DevIssuer]:
    issuer = DevIssuer(tmp_path)
    auth = Authenticator(AuthSettings(**{k.removeprefix("SCHIZODOT_AUTH_").lower(): v
                                         for k, v in issuer.environment().items()}),
                         InMemoryApiKeys(), InMemoryPatientLinks())

    async def no_erasures(_body: str) -> str:
        raise AssertionError("no erasure here")

    access = ResultsAccess(auth, AuditTrail(MemoryAuditStore(), "unit-test-key", "test"), InMemoryApiKeys(),
                           MemoryErasures(), no_erasures)
    app = create_app(ResultsSettings(api_max_page_size=max_page_size), InMemoryJobs(), InMemoryHistory(), access)
    return TestClient(app), issuer


def test_the_configured_page_size_is_enforced_and_documented(tmp_path):
    client, issuer = _client(tmp_path, max_page_size=7)
    clinician = {"Authorization": f"Bearer {issuer.mint('dev-clinician')}"}
    admin = {"Authorization": f"Bearer {issuer.mint('dev-admin')}"}
    with client:
        for path, who in (("/api/v1/patients/patient-001/jobs", clinician),
                          ("/api/v1/patients/patient-001/results", clinician), ("/api/v1/audit", admin)):
            assert client.get(path, params={"limit": 7}, headers=who).status_code == 200, path
            over = client.get(path, params={"limit": 8}, headers=who)
            assert over.status_code == 422 and over.json() == {
                "detail": "limit: Input should be less than or equal to 7"}, path
            assert client.get(path, params={"limit": 0}, headers=who).status_code == 422, path
        spec = client.get("/openapi.json").json()
    for path in PAGED:
        [limit] = [p for p in spec["paths"][path]["get"]["parameters"] if p["name"] == "limit"]
        assert limit["schema"]["maximum"] == 7 and limit["schema"]["minimum"] == 1, path
