"""The clinics file has one schema (shared.domain.clinics) that ingest, audio and results all
read: each finds its section in the same file, and a file one of them would refuse
is refused by all of them, naming the setting."""

from __future__ import annotations

import json

import pytest

from services.audio.languages import ClinicLanguages
from services.ingest.patient.script import ScriptCatalog
from shared.domain.clinics import DEFAULT_PROMPTS, ClinicDirectory, read_clinics_file
from shared.domain.errors import ConfigurationError

FILE = {
    "default": {"timezone": "UTC", "languages": ["en"]},
    "clinics": {"clinica-sur": {
        "name": "Clínica Sur", "timezone": "America/Santiago", "languages": ["es", "en"],
        "checkin": {"prompts": [{"id": "animo", "text": "¿Cómo ha estado su ánimo?"}], "max_seconds": 240},
        "alerts": {"risk_levels": ["high", "moderate"], "no_checkin_days": 5},
        "delivery": {"webhook": {"url": "https://ehr.example/hooks", "secret_env": "SUR_WEBHOOK_SECRET"}},
    }},
}


def _write(tmp_path, content) -> object:
    path = tmp_path / "clinics.json"
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_every_service_reads_its_section_of_one_file(tmp_path):
    path = _write(tmp_path, FILE)
    script = ScriptCatalog.from_file(path)
    assert [step.id for step in script.for_clinic("clinica-sur").prompts] == ["animo"]
    assert script.for_clinic("clinica-sur").max_seconds == 240
    assert script.for_clinic("elsewhere").prompts == DEFAULT_PROMPTS
    assert ClinicLanguages.from_file(path).for_clinic("clinica-sur") == ("es", "en")
    profile = ClinicDirectory.from_file(path).get("clinica-sur")
    assert (profile.name, profile.timezone, profile.alerts.no_checkin_days) == ("Clínica Sur", "America/Santiago", 5)
    assert profile.delivery.webhook.url == "https://ehr.example/hooks"
    # One parsed profile holds every key, whichever service reads it.
    parsed = read_clinics_file(path).clinics["clinica-sur"]
    assert parsed.checkin.prompts[0].id == "animo" and parsed.languages == ("es", "en") and parsed.name == "Clínica Sur"


@pytest.mark.parametrize("bad", [
    {"clinics": {"c": {"checkin": {"prompts": []}}}},  # a script with no prompt
    {"clinics": {"c": {"timezone": "Mars/Olympus"}}},
    {"clinics": {"c": {"languages": []}}},
    {"clinics": {"c": {"alerts": {"risk_levels": ["extreme"]}}}},
])
def test_a_bad_section_is_refused_by_every_service_naming_the_setting(tmp_path, bad):
    path = _write(tmp_path, bad)
    for read in (ScriptCatalog.from_file, ClinicLanguages.from_file, ClinicDirectory.from_file):
        with pytest.raises(ConfigurationError) as caught:
            read(path)
        assert caught.value.setting == "SCHIZODOT_CLINICS_FILE"


def test_a_language_whisper_does_not_know_stops_the_audio_service(tmp_path):
    path = _write(tmp_path, {"clinics": {"c": {"languages": ["es", "klingon"]}}})
    with pytest.raises(ConfigurationError, match="klingon"):
        ClinicLanguages.from_file(path)
