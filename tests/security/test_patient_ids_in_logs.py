"""Finding 8 of issue 19: patient ids never reach the logs, whatever their shape: an
all-letter id in the path of an unauthenticated request, an EHR's own name for its media
under `incoming/<clinic>/`."""

from __future__ import annotations

import json
import logging

import structlog
from fastapi.testclient import TestClient

from services.results.console.tests.fakes import Console
from shared.runtime.logs import configure_logging, pseudonymise, redact


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_patient_ids_in_logs_unauthenticated_path_with_an_all_letter_id(tmp_path, capsys):
    configure_logging("schizodot-results", "INFO", pseudonym_key="logs-test-key")
    for client_logger in ("httpx", "httpx2"):  # the test's own client logs the URLs it calls; the service's does not
        logging.getLogger(client_logger).setLevel(logging.WARNING)
    console = Console(tmp_path)
    with TestClient(console.app, follow_redirects=False) as http:
        assert http.get("/api/v1/patients/JohnSmith/results").status_code == 401
        assert http.get("/console/patients/MaryJane", headers={"Accept": "text/html"}).status_code == 303
    logged = capsys.readouterr().out
    assert "JohnSmith" not in logged and "MaryJane" not in logged
    refused = [line for line in _lines(logged) if line.get("event") == "request not authenticated"]
    assert [line["path"] for line in refused] == ["/api/v1/patients/…/results", "/console/patients/…"]


def test_patient_ids_in_logs_ehr_media_keys_are_redacted(capsys):
    configure_logging("schizodot-ingest", "INFO", pseudonym_key="logs-test-key")
    key = "incoming/clinic-north/John_Smith_1961-02-03.mp4"
    assert "John_Smith" not in redact(f"cannot read s3://schizodot-media/{key}: NoSuchKey")
    assert redact(key) == f"incoming/clinic-north/{pseudonymise('John_Smith_1961-02-03.mp4')}"
    structlog.get_logger().warning("media unavailable", s3_key=key, error=f"An error occurred reading '{key}'")
    logged = capsys.readouterr().out
    assert "John_Smith" not in logged and "incoming/clinic-north/pt-" in logged
