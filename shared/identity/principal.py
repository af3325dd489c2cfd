"""Who is calling: the vocabulary of identity and roles every API shares.

A ``Principal`` is what authentication yields, whatever the credential (an OIDC
bearer token for people, a hashed API key for systems, a one-time patient link).
Authorisation is then two questions, always asked in this order:

1. May this role call this route at all? If not: 403 (the only place 403 is used).
2. Does the resource belong to the caller's clinic? If not: 404, exactly as for a
   resource that does not exist, so another clinic's data cannot even be probed.

Verification of credentials lives in the auth adapter, not here: this module
imports nothing but the standard library, pydantic and `shared.domain.patients` (the two patient names).
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.patients import CLINIC_ID_PATTERN, PATIENT_KEY_SEPARATOR, ClinicPatientId, PatientKey, is_clinic_id

__all__ = ["CLINIC_ID_PATTERN", "PATIENT_KEY_SEPARATOR", "READS_PHI", "ClinicPatientId", "CredentialKind",
           "PatientKey", "Principal", "Role", "is_clinic_id", "local_patient_id", "patient_key",
           "split_patient_key"]


class Role(str, Enum):
    UPLOADER = "uploader"                # creates check-ins for its clinic's patients; reads no results
    PATIENT_LINK = "patient-link"        # one patient, one check-in, one upload, short-lived
    CLINICIAN = "clinician"              # reads its clinic's patients
    CLINIC_ADMIN = "clinic_admin"        # clinician + erasure, audit and key management for its clinic
    EHR_INTEGRATION = "ehr_integration"  # publishes events and receives results for its clinic
    OPERATOR = "operator"                # health, metrics, queue state; never PHI


# Roles that may read a clinic's patients' findings.
READS_PHI = frozenset({Role.CLINICIAN, Role.CLINIC_ADMIN, Role.EHR_INTEGRATION})


class CredentialKind(str, Enum):
    BEARER = "bearer"          # an OIDC access token (JWT) of a person
    API_KEY = "api_key"        # a system's key, stored hashed
    PATIENT_LINK = "patient_link"
    SESSION = "session"        # a person signed in to the console in a browser (a server-side session)


class Principal(BaseModel):
    """An authenticated caller. ``clinic_id`` scopes everything it may see or do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(description="the token's sub, the API key's name, or the link's id")
    role: Role
    clinic_id: str | None = Field(None, description="None only for operators, who see no PHI")
    credential: CredentialKind
    # A patient link is bound to one patient and one check-in.
    patient_id: ClinicPatientId | None = None
    job_id: str | None = None
    display_name: str | None = None
    # The API key's id or the patient link's id (a hash), for revocation and one-time use.
    credential_id: str | None = None

    def may(self, *roles: Role) -> bool:
        return self.role in roles

    def owns(self, clinic_id: str | None) -> bool:
        """True when a resource of ``clinic_id`` is this caller's clinic's (never for operators)."""
        return self.clinic_id is not None and clinic_id == self.clinic_id

    @property
    def patient_key(self) -> PatientKey | None:
        """A patient link's patient as stored (``clinic.patient``); None for other principals."""
        if self.patient_id is None or self.clinic_id is None:
            return None
        return patient_key(self.clinic_id, self.patient_id)

    def key_of(self, patient_id: ClinicPatientId | str) -> PatientKey:
        """The stored key of ``patient_id`` in this caller's clinic (a ValueError for operators)."""
        if self.clinic_id is None:
            raise ValueError("this principal belongs to no clinic")
        return patient_key(self.clinic_id, patient_id)


# --- clinics and the patient key ------------------------------------------------------------
#
# Two clinics may both have a "patient-001". Everything stored about a patient is keyed by the
# *patient key* (shared.domain.patients.PatientKey), the clinic-local id (ClinicPatientId) prefixed with
# its clinic ("clinic-a.patient-001"). The APIs show the clinic-local id. The functions below are
# the conversions, kept under their old names for the callers that use them.


def patient_key(clinic_id: str, patient_id: ClinicPatientId | str) -> PatientKey:
    """The stored key of a clinic's patient."""
    return PatientKey.of(clinic_id, patient_id)


def split_patient_key(key: str) -> tuple[str | None, ClinicPatientId]:
    """(clinic id, clinic-local patient id) of a stored key; (None, key) for a key without a clinic."""
    stored = PatientKey.parse(key)
    return stored.clinic_id, stored.patient


def local_patient_id(key: str) -> ClinicPatientId:
    """The clinic-local id of a stored key."""
    return PatientKey.parse(key).patient
