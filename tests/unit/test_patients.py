"""The clinic-local patient id and the stored patient key are two types: converted only explicitly,
never passed for each other, and plain strings wherever they are stored or sent."""

from __future__ import annotations

import asyncio
import json

import pytest
from boto3.dynamodb.types import TypeSerializer
from pydantic import BaseModel

from shared.aws.dynamo import to_item
from shared.domain.job import Job
from shared.domain.patients import ClinicPatientId, PatientKey
from shared.fakes import InMemoryHistory
from shared.identity.audit import patient_ref
from shared.identity.principal import CredentialKind, Principal, Role


def test_the_key_is_made_from_a_clinic_and_its_patient_and_gives_both_back():
    key = PatientKey.of("clinic-a", "patient-001")
    assert key == "clinic-a.patient-001" and isinstance(key, PatientKey)
    assert key.clinic_id == "clinic-a"
    assert key.patient == "patient-001" and isinstance(key.patient, ClinicPatientId)
    assert PatientKey.parse("patient-001").clinic_id is None  # a key from before keys named the clinic
    assert PatientKey.parse("patient-001").patient == "patient-001"


def test_one_can_never_be_passed_for_the_other():
    key = PatientKey.of("clinic-a", "patient-001")
    with pytest.raises(TypeError, match="a PatientKey is not a ClinicPatientId"):
        ClinicPatientId(key)
    with pytest.raises(TypeError, match="a ClinicPatientId is not a PatientKey"):
        PatientKey.parse(key.patient)
    with pytest.raises(ValueError, match="has no '.'"):
        ClinicPatientId("clinic-a.patient-001")  # a stored key, as a plain string, is no clinic-local id
    with pytest.raises(TypeError):
        PatientKey.of("clinic-a", key)  # keying a key twice
    with pytest.raises(ValueError, match="not a clinic id"):
        PatientKey.of("Clinic A", "patient-001")


def test_the_stores_and_the_audit_refuse_a_clinic_local_id_where_the_key_is_meant():
    """Reading history by the clinic-local id would read an empty partition, and the audit would
    pseudonymise another string: both are a TypeError instead."""
    local = ClinicPatientId("patient-001")
    with pytest.raises(TypeError):
        asyncio.run(InMemoryHistory().latest(local))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        patient_ref("k" * 32, local)
    principal = Principal(subject="dr-a", role=Role.CLINICIAN, clinic_id="clinic-a", credential=CredentialKind.BEARER)
    assert patient_ref("k" * 32, principal.key_of(local)) == patient_ref("k" * 32, "clinic-a.patient-001")


def test_both_are_plain_strings_in_json_dynamodb_and_pydantic():
    key = PatientKey.of("clinic-a", "patient-001")
    assert json.dumps({"k": key, "p": key.patient}) == '{"k": "clinic-a.patient-001", "p": "patient-001"}'
    assert TypeSerializer().serialize(key) == {"S": "clinic-a.patient-001"}
    assert to_item({"user_id": key}) == {"user_id": {"S": "clinic-a.patient-001"}}

    class Record(BaseModel):
        key: PatientKey
        patient: ClinicPatientId

    record = Record.model_validate({"key": "clinic-a.patient-001", "patient": "patient-001"})
    assert type(record.key) is PatientKey and type(record.patient) is ClinicPatientId
    assert record.model_dump() == {"key": "clinic-a.patient-001", "patient": "patient-001"}
    assert all(type(v) is str for v in record.model_dump().values())
    assert record.model_dump_json() == '{"key":"clinic-a.patient-001","patient":"patient-001"}'


def test_a_job_keeps_its_patient_as_the_key_and_shows_the_clinics_id():
    job = Job.from_item({"job_id": "job-" + "a" * 32, "patient_id": "clinic-a.patient-001", "status": "queued",
                         "s3_key": "uploads/x", "created_at": "t", "updated_at": "t"})
    assert type(job.patient_id) is PatientKey and job.clinic_id == "clinic-a"
    assert job.patient_id.patient == "patient-001"
    assert type(job.to_item()["patient_id"]) is str
