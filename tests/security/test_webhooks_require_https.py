"""Finding 12 of issue 19: alerts name patients, so a clinic's webhook must be https://;
plain http:// only on the embedded stack (one machine, a receiver on loopback)."""

from __future__ import annotations

import json

import pytest

from shared.domain.clinics import ClinicDirectory
from shared.domain.errors import ConfigurationError
from shared.settings import CommonSettings


def _clinics(tmp_path, url: str):
    path = tmp_path / "clinics.json"
    path.write_text(json.dumps({"clinics": {"clinic-north": {"delivery": {"webhook": {
        "url": url, "secret_env": "NORTH_WEBHOOK_SECRET"}}}}}))
    return path


def test_webhooks_require_https_outside_the_embedded_stack(tmp_path, monkeypatch):
    with pytest.raises(ConfigurationError, match="clinic-north: the webhook URL must start with https://"):
        ClinicDirectory.from_file(_clinics(tmp_path, "http://ehr.example/hooks"))
    assert ClinicDirectory.from_file(_clinics(tmp_path, "https://ehr.example/hooks")).get("clinic-north").delivery.webhook
    # the embedded stack says so in its environment (schizodot.stack); the results worker passes it on
    monkeypatch.setenv("SCHIZODOT_EMBEDDED_STACK", "true")
    embedded = CommonSettings().embedded_stack
    assert embedded is True
    assert ClinicDirectory.from_file(_clinics(tmp_path, "http://127.0.0.1:9000/hooks"), plain_http_webhooks=embedded)
