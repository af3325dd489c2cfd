"""Finding 1 of issue 19, its last requirement: patients' phones must upload through a path that
does not expose the AWS server. The ingest service, started as it runs (its own process, its
default settings) beside an AWS server, hands a phone and a clinic app no URL on that server:
the patient page's part URLs, its Content-Security-Policy, the patient link's one-request
upload and the analyze API all name the ingest API only (the upload proxy, docs/uploads.md).
Failed on the code before the fix: every one of them named the AWS server's port (presigned
requests), so compose had to publish it to whatever the phones could reach."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from schizodot.dev_identity import DevIssuer
from schizodot.stack import wait_for_port
from tests.conftest import _dummy_aws_credentials, aws_server, free_port  # noqa: F401

pytestmark = pytest.mark.server
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def ingest(aws_server, tmp_path):
    issuer = DevIssuer(tmp_path / "issuer").ensure()
    port = free_port()
    env = {**os.environ, "AWS_ENDPOINT_URL": aws_server.aws_endpoint_url, "AWS_REGION": aws_server.aws_region,
           "SCHIZODOT_PSEUDONYM_KEY": "phones-upload-test-" + uuid.uuid4().hex, "SCHIZODOT_METRICS_PORT": "0",
           "INGEST_API_PORT": str(port), "PYTHONPATH": str(REPO), **issuer.environment()}
    env.pop("INGEST_UPLOAD_MODE", None)  # the service's own default
    process = subprocess.Popen([sys.executable, "-m", "services.ingest.main"], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 60)
        yield f"http://127.0.0.1:{port}", issuer
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def test_phones_upload_without_the_aws_server(aws_server, ingest):
    api, issuer = ingest
    aws = urlsplit(aws_server.aws_endpoint_url).netloc  # host:port of the AWS server
    clinician = {"Authorization": f"Bearer {issuer.mint('dev-clinician')}"}
    uploader = {"Authorization": f"Bearer {issuer.mint('dev-uploader')}"}
    with httpx.Client(base_url=api, timeout=30) as http:
        seen: dict[str, str] = {}
        seen["page policy"] = http.get("/checkin").headers["content-security-policy"]

        link = http.post("/api/v1/patient-links", headers=clinician, json={"patient_id": "patient-phone1"})
        assert link.status_code == 201, link.text
        token = {"Authorization": f"Bearer {link.json()['token']}"}
        plan = http.post("/api/v1/checkin/upload", headers=token, json={"content_type": "video/webm", "size": 1000})
        assert plan.status_code == 201, plan.text
        seen["page parts"] = " ".join(part["url"] for part in plan.json()["parts"])

        other = http.post("/api/v1/patient-links", headers=clinician, json={"patient_id": "patient-phone2"})
        single = http.post("/api/v1/patient-link/upload", json={"content_type": "video/mp4"},
                           headers={"Authorization": f"Bearer {other.json()['token']}"})
        assert single.status_code == 201, single.text
        seen["link upload"] = single.json()["upload_url"] + str(single.json()["upload_fields"])

        created = http.post("/api/v1/analyze", headers=uploader, json={
            "patient_id": "patient-phone3", "filename": "c.mp4", "content_type": "video/mp4"})
        assert created.status_code == 201, created.text
        seen["analyze"] = created.json()["upload_url"] + str(created.json()["upload_fields"])

    named = {where: text for where, text in seen.items() if aws in text}
    assert named == {}, f"handed out the AWS server ({aws}): {named}"
    assert plan.json()["parts"][0]["url"].startswith("/api/v1/checkin/upload/part?")
    assert single.json()["upload_url"].startswith(api + "/api/v1/uploads/")
    assert created.json()["upload_url"] == f"{api}/api/v1/uploads/{created.json()['job_id']}"
