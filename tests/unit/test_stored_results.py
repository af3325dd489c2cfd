"""A stored result is parsed once where it is read (shared.domain.stored_results.stored_result): every reader
takes the `ResultItem`, the item dumps exactly as it was stored, and one that does not parse is an error
naming its job and the field, never a check-in quietly left out."""

from __future__ import annotations

import copy

import pytest

from shared.domain.errors import InvalidStoredResult
from shared.domain.findings import MarkerValue, ResultItem
from shared.domain.patients import ClinicPatientId, PatientKey
from shared.domain.stored_results import markers, stored_result, transcript_flags
from tests.browser.contract_items import history

TRANSCRIPT = "I want to hurt myself"


def stored_item(**results) -> dict:
    """A contract item as SchizodotUsers holds it: under the patient key, no clinic beside it."""
    [item] = history("patient-101", "clinic-north", 1, transcript=TRANSCRIPT)
    item = {k: v for k, v in item.items() if k != "clinic_id"}
    return {**item, "user_id": str(PatientKey.of("clinic-north", "patient-101")),
            "results": {**item["results"], **results}}


def test_an_item_is_read_once_into_typed_blocks_and_dumps_exactly_as_it_was_stored():
    raw = stored_item()
    item = stored_result(copy.deepcopy(raw))
    assert isinstance(item, ResultItem) and item.stored() == raw  # numbers keep their type, nothing is added
    assert item.patient_key == "clinic-north.patient-101" and isinstance(item.patient_key, PatientKey)
    assert item.patient == "patient-101" and isinstance(item.patient, ClinicPatientId)
    assert item.clinic_id == "clinic-north"
    speech = next(m for m in markers(item) if m.name == "speech_rate")
    assert isinstance(speech.marker, MarkerValue) and speech.unit == "syllables per min"
    assert speech.baseline.available is False and speech.baseline.reason  # the first check-in has none yet


def test_the_api_view_names_the_clinics_own_patient_id_and_the_clinic():
    item = stored_result(stored_item())
    shown = item.shown().stored()
    assert shown["user_id"] == "patient-101" and shown["clinic_id"] == "clinic-north"
    assert {k: v for k, v in shown.items() if k not in ("user_id", "clinic_id")} == \
        {k: v for k, v in item.stored().items() if k != "user_id"}
    assert item.shown().clinic_id == "clinic-north" and item.shown().patient == "patient-101"


def test_an_item_from_before_keys_named_the_clinic_reads_its_clinic_from_where_it_was_written():
    legacy = {**stored_item(), "user_id": "patient-101"}
    assert stored_result({**legacy, "clinic_id": "clinic-north"}).clinic_id == "clinic-north"
    assert stored_result({**legacy, "metadata": {"clinic_id": "clinic-north"}}).clinic_id == "clinic-north"
    assert stored_result(legacy).clinic_id is None  # no clinic anywhere: the console shows it to no clinic


def test_flags_read_as_the_summary_has_them_each_with_its_phrase():
    item = stored_result(stored_item(clinical_summary={
        **stored_item()["results"]["clinical_summary"],
        "flags": [{"phrase": "hurt myself", "category": "self_harm", "severity": "high"}, "no point", " ",
                  {"text": "older flag", "category": "hopelessness"}]}))
    assert [(f.phrase, f.category) for f in transcript_flags(item)] == [
        ("hurt myself", "self_harm"), ("no point", None), ("older flag", "hopelessness")]


@pytest.mark.parametrize("broken, field", [
    (lambda item: {**item, "results": {k: v for k, v in item["results"].items() if k != "compliance"}},
     "results.compliance: Field required"),
    (lambda item: {**item, "results": {**item["results"], "transcript": {**item["results"]["transcript"],
                                                                         "segments": TRANSCRIPT}}},
     "results.transcript.segments: Input should be a valid list"),
    (lambda item: {k: v for k, v in item.items() if k != "timestamp"}, "timestamp: Field required"),
])
def test_an_item_that_does_not_parse_names_its_job_and_field_and_never_what_the_patient_said(broken, field):
    raw = broken(stored_item())
    with pytest.raises(InvalidStoredResult) as raised:
        stored_result(raw)
    message = str(raised.value)
    assert message.startswith(f"the stored result of {raw['job_id']} is not a valid ResultItem: ")
    assert field in message
    assert TRANSCRIPT not in message and "patient-101" not in message  # the message may reach logs
