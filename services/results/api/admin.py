"""The clinic admin's routes of the results API: the audit trail and API keys, mounted by
`services.results.api.app.create_app` (clinic_admin only)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from services.results.api.context import ADMIN, PAGE_LIMIT_DOC, PAGE_SIZE_CEILING, ResultsApi, api_of
from services.results.api.params import b64, unb64
from shared.domain.checkin import PATIENT_ID_PATTERN
from shared.identity.audit import AuditEvent
from shared.identity.credentials import API_KEY_ROLES
from shared.identity.principal import Principal, Role


class AuditPage(BaseModel):
    count: int
    records: list[dict[str, Any]]
    next_token: str | None = None


class NewApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9 ._-]+$")
    role: Literal["uploader", "clinician", "ehr_integration"]
    expires_in: int | None = Field(None, ge=60, le=10 * 366 * 24 * 3600,
                                   description="seconds until the key is refused; none: until revoked")


class ApiKeyView(BaseModel):
    key_id: str
    name: str
    role: str
    clinic_id: str
    created_at: str
    created_by: str
    revoked_at: str | None = None
    expires_at: str | None = None


class CreatedApiKey(ApiKeyView):
    api_key: str = Field(description="send as X-API-Key; shown once, stored only hashed")


def _utc_stamp(moment: datetime) -> str:
    """An ISO instant as the audit keys write it (naive means UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


audit_router = APIRouter(tags=["audit"])
api_key_router = APIRouter(tags=["API keys"])


@audit_router.get("/api/v1/audit", response_model=AuditPage)
async def audit_trail(
    patient_id: str | None = Query(None, pattern=PATIENT_ID_PATTERN, description="only this patient's records"),
    since: datetime | None = Query(None, description="ISO 8601; records at or after it"),
    limit: int = Query(50, ge=1, le=PAGE_SIZE_CEILING, description=PAGE_LIMIT_DOC),
    next_token: str | None = Query(None, max_length=2048, description="from the previous page"),
    who: Principal = Depends(ADMIN),
    api: ResultsApi = Depends(api_of),
) -> AuditPage:
    """Who read or wrote what in your clinic, oldest first, a page at a time (a page may hold
    fewer records than `limit` while `next_token` is not null)."""
    assert who.clinic_id is not None
    after = None
    if next_token:
        decoded = unb64(next_token)
        after = decoded.get("after") if isinstance(decoded, dict) else None
        if not isinstance(after, str) or not after.startswith(f"audit/{who.clinic_id}/"):
            raise HTTPException(status_code=422, detail="next_token: not a token this API returned")
    stamp = _utc_stamp(since) if since else None
    reference = api.audit.ref_of(who, patient_id) if patient_id else None
    records, more = await api.audit.query(who.clinic_id, since=stamp, patient_ref_=reference,
                                          limit=api.page_limit(limit), after=after)
    # Recorded without the patient: a read of the trail must not add to the very listing it pages through.
    await api.audit.record(AuditEvent("audit.read", who, detail={"count": len(records),
                                                                 "patient_filter": patient_id is not None}))
    return AuditPage(count=len(records), records=records, next_token=b64({"after": more}) if more else None)


@api_key_router.post("/api/v1/api-keys", response_model=CreatedApiKey, status_code=201)
async def create_key(body: NewApiKey, who: Principal = Depends(ADMIN), api: ResultsApi = Depends(api_of)
                     ) -> CreatedApiKey:
    """A key for a system of your clinic (an EHR integration, a clinic app backend)."""
    assert who.clinic_id is not None
    role = Role(body.role)
    assert role in API_KEY_ROLES
    key, secret = await api.api_keys.create(body.name, role, who.clinic_id, who.subject, body.expires_in)
    await api.audit.record(AuditEvent("api_key.create", who, detail={"key_id": key.key_id, "role": role.value,
                                                                     "expires_at": key.expires_at}))
    return CreatedApiKey(**key.view(), api_key=secret)


@api_key_router.get("/api/v1/api-keys", response_model=list[ApiKeyView])
async def list_keys(who: Principal = Depends(ADMIN), api: ResultsApi = Depends(api_of)) -> list[ApiKeyView]:
    assert who.clinic_id is not None
    return [ApiKeyView(**key.view()) for key in await api.api_keys.list_for_clinic(who.clinic_id)]


@api_key_router.delete("/api/v1/api-keys/{key_id}", response_model=ApiKeyView)
async def revoke_key(key_id: str = Path(pattern=r"^[0-9a-f]{16}$"), who: Principal = Depends(ADMIN),
                     api: ResultsApi = Depends(api_of)) -> ApiKeyView:
    """Revoke a key: it is refused from the next request on (idempotent)."""
    assert who.clinic_id is not None
    key = await api.api_keys.revoke(key_id, who.clinic_id)
    if key is None:
        raise HTTPException(status_code=404, detail=f"no API key {key_id}")
    await api.audit.record(AuditEvent("api_key.revoke", who, detail={"key_id": key_id}))
    return ApiKeyView(**key.view())
