"""Clinic scoping is a property of the principal: operators own no clinic's data."""

from __future__ import annotations

import pytest

from shared.identity.principal import CredentialKind, Principal, Role


def test_a_principal_owns_only_its_own_clinic() -> None:
    clinician = Principal(subject="dr-a", role=Role.CLINICIAN, clinic_id="clinic-a", credential=CredentialKind.BEARER)
    assert clinician.owns("clinic-a")
    assert not clinician.owns("clinic-b")
    assert not clinician.owns(None)


def test_an_operator_owns_no_clinic() -> None:
    operator = Principal(subject="sre", role=Role.OPERATOR, credential=CredentialKind.BEARER)
    assert not operator.owns(None) and not operator.owns("clinic-a")


def test_principals_are_immutable_and_strict() -> None:
    link = Principal(subject="link-1", role=Role.PATIENT_LINK, clinic_id="c", credential=CredentialKind.PATIENT_LINK,
                     patient_id="patient-001", job_id="job-0123456789ab")
    with pytest.raises(ValueError):
        link.model_copy(update={}).__setattr__("role", Role.CLINICIAN)
    with pytest.raises(ValueError):
        Principal.model_validate({"subject": "x", "role": "superuser", "credential": "bearer"})
