"""Each clinic's settings for the console and its alerts: name, time zone, alert
rules, where alerts are delivered and how clinicians sign in.

The clinics file has one schema for every service, in `shared.domain.clinics`; these are
its names as the results service uses them.
"""

from shared.domain.clinics import (
    MFA_AMR,
    SIGN_IN_ROLES,
    AlertDelivery,
    AlertRules,
    ClinicDirectory,
    ClinicProfile,
    ClinicsFileError,
    SignInProvider,
    WebhookTarget,
)

__all__ = ["MFA_AMR", "SIGN_IN_ROLES", "AlertDelivery", "AlertRules", "ClinicDirectory", "ClinicProfile",
           "ClinicsFileError", "SignInProvider", "WebhookTarget"]
