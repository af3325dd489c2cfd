"""The two names of a patient, as two types that cannot be passed for each other.

- `ClinicPatientId`: the id the clinic knows its patient by ("patient-001"). What the APIs,
  the console, FHIR and exports show, and what a clinic sends.
- `PatientKey`: the stored key, the clinic-local id prefixed with its clinic
  ("clinic-a.patient-001"): SchizodotJobs.patient_id (and so its GSI), SchizodotUsers.user_id,
  upload keys, alert and link indexes. Two clinics may both have a "patient-001"; the key keeps
  their data apart, and another clinic's patient reads an empty partition, like a missing one.

The key is also the one place the clinic of a stored record is kept: `PatientKey.clinic_id`.

Both are `str` subclasses rather than frozen dataclasses: a value goes into DynamoDB
(boto3's TypeSerializer), JSON, S3 keys, log-free audit hashes and pydantic `str` fields as the
plain string it is, with no conversion at any of those edges, while the type checker treats
them as two distinct types (a `PatientKey` is not a `ClinicPatientId`), and at run time
`isinstance` tells them apart too. The only ways across are explicit: `PatientKey.of(clinic,
patient)` and `key.patient`. Constructing either checks its shape, so a stored key can never be
wrapped as a clinic-local id (it has a '.') and a bare id is not taken for a key by accident.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

CLINIC_ID_PATTERN = r"^[a-z0-9][a-z0-9-]{1,62}$"
PATIENT_KEY_SEPARATOR = "."  # in neither a clinic id nor a patient id (shared.domain.checkin.PATIENT_ID_PATTERN)
_CLINIC = re.compile(CLINIC_ID_PATTERN)


def is_clinic_id(value: object) -> bool:
    return isinstance(value, str) and _CLINIC.match(value) is not None


class _PatientName(str):
    """What both names share: validated on construction, plain strings everywhere else."""

    __slots__ = ()

    def __new__(cls, value: str) -> Any:
        if not isinstance(value, str):
            raise TypeError(f"{cls.__name__} is made from a string, not {type(value).__name__}")
        if isinstance(value, _PatientName) and not isinstance(value, cls):
            # the one mistake these types exist to stop: use PatientKey.of / key.patient instead
            raise TypeError(f"a {type(value).__name__} is not a {cls.__name__}")
        cls._check(value)
        return super().__new__(cls, value)

    @classmethod
    def _check(cls, value: str) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str.__repr__(self)})"

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        # accepted from a plain string (JSON, DynamoDB), validated, and dumped as that string
        return core_schema.no_info_after_validator_function(
            lambda value: value if type(value) is cls else cls(value), core_schema.str_schema(),
            serialization=core_schema.plain_serializer_function_ser_schema(str))


class ClinicPatientId(_PatientName):
    """The clinic's own id of its patient ("patient-001"); never contains '.'."""

    __slots__ = ()

    @classmethod
    def _check(cls, value: str) -> None:
        if PATIENT_KEY_SEPARATOR in value:
            raise ValueError("a clinic-local patient id has no '.' (is this a stored patient key?)")
        if not value:
            raise ValueError("a clinic-local patient id is not empty")


class PatientKey(_PatientName):
    """The stored key of a clinic's patient ("clinic-a.patient-001").

    Keys written before the clinic was part of the key have no clinic prefix; they stay valid
    (`clinic_id` None) so old items and jobs can still be read."""

    __slots__ = ()

    @classmethod
    def _check(cls, value: str) -> None:
        if not value:
            raise ValueError("a stored patient key is not empty")

    @classmethod
    def of(cls, clinic_id: str, patient: ClinicPatientId | str) -> PatientKey:
        """The stored key of `clinic_id`'s patient `patient` (its clinic-local id)."""
        if not is_clinic_id(clinic_id):
            raise ValueError(f"not a clinic id: {clinic_id!r}")
        return cls(f"{clinic_id}{PATIENT_KEY_SEPARATOR}{ClinicPatientId(patient)}")

    @classmethod
    def parse(cls, stored: str) -> PatientKey:
        """A key read back from a store (a `PatientKey` already is one)."""
        return stored if isinstance(stored, PatientKey) else cls(stored)

    def _parts(self) -> tuple[str | None, str]:
        clinic, separator, local = self.partition(PATIENT_KEY_SEPARATOR)
        return (clinic, local) if separator and is_clinic_id(clinic) else (None, str(self))

    @property
    def clinic_id(self) -> str | None:
        """The clinic this patient belongs to; None for a key written before keys carried it."""
        return self._parts()[0]

    @property
    def patient(self) -> ClinicPatientId:
        """The id the clinic knows this patient by."""
        return ClinicPatientId(self._parts()[1])
