"""Who is calling: the vocabulary of identity and roles every API shares.

A ``Principal`` is what authentication yields, whatever the credential (an OIDC
bearer token for people, a hashed API key for systems, a one-time patient link).
Authorisation is then two questions, always asked in this order:

1. May this role call this route at all? If not: 403 (the only place 403 is used).
2. Does the resource belong to the caller's clinic? If not: 404, exactly as for a
   resource that does not exist, so another clinic's data cannot even be probed.

Verification of credentials lives in the auth adapter, not here: this module
imports nothing but the standard library and pydantic.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field


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


class Principal(BaseModel):
    """An authenticated caller. ``clinic_id`` scopes everything it may see or do."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    subject: str = Field(description="the token's sub, the API key's name, or the link's id")
    role: Role
    clinic_id: str | None = Field(None, description="None only for operators, who see no PHI")
    credential: CredentialKind
    # A patient link is bound to one patient and one check-in.
    patient_id: str | None = None
    job_id: str | None = None
    display_name: str | None = None

    def may(self, *roles: Role) -> bool:
        return self.role in roles

    def owns(self, clinic_id: str | None) -> bool:
        """True when a resource of ``clinic_id`` is this caller's clinic's (never for operators)."""
        return self.clinic_id is not None and clinic_id == self.clinic_id
