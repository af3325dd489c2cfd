"""The access adapters an API process builds once: authenticator, audit trail, limiter, keys and links.

One place for both APIs (ingest, results) and for routers mounted on them
(issue 13's patient page and console take `principal` and `audit` from here).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import structlog

from shared.identity.audit import AuditTrail, S3AuditStore
from shared.identity.auth import Authenticator
from shared.identity.credentials import ApiKeyStore, DynamoApiKeys, DynamoPatientLinks, PatientLinkStore
from shared.identity.middleware import principal_dependency
from shared.identity.ratelimit import DynamoRateLimiter, RateLimiter
from shared.identity.tokens import AuthSettings
from shared.settings import CommonSettings

log = structlog.get_logger()


@dataclass
class Access:
    authenticator: Authenticator
    audit: AuditTrail
    limiter: RateLimiter
    api_keys: ApiKeyStore
    links: PatientLinkStore

    @property
    def principal(self):
        """The FastAPI dependency returning the caller's `shared.identity.principal.Principal`."""
        return principal_dependency(self.authenticator)


def build_access(common: CommonSettings, aws: Any, *, service: str, auth: AuthSettings | None = None) -> Access:
    """From a worker's AWS clients (`shared.aws.clients.AsyncClients`)."""
    common.check_pseudonym_key(required=True)
    assert common.pseudonym_key
    auth = auth or AuthSettings()
    if not auth.bearer_configured:
        log.warning("bearer tokens are refused: set SCHIZODOT_AUTH_ISSUER, SCHIZODOT_AUTH_AUDIENCE and "
                    "SCHIZODOT_AUTH_JWKS_URL or SCHIZODOT_AUTH_JWKS_FILE; API keys and patient links still work")
    api_keys = DynamoApiKeys(aws.dynamodb, common.api_keys_table)
    links = DynamoPatientLinks(aws.dynamodb, common.patient_links_table)
    return Access(
        authenticator=Authenticator(auth, api_keys, links),
        audit=AuditTrail(S3AuditStore(aws.s3, common.audit_bucket), common.pseudonym_key, service),
        limiter=DynamoRateLimiter(aws.dynamodb, common.rate_limits_table),
        api_keys=api_keys,
        links=links,
    )
