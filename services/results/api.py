"""The results API: a clinic's patients' history and job status, erasure, the audit
trail and API keys.

Every route but /health and the OpenAPI docs needs a credential (shared.auth),
checked before routing and validation: without one the answer is the same 401
whatever the path. Then, in this order:

1. the role: a route names the roles that may call it; any other gets 403, the
   only place 403 is used;
2. the clinic: patients are read under the caller's clinic's patient key
   (shared.identity), and a job of another clinic is 404 in exactly the words of
   a job that does not exist;
3. the audit trail: every response carrying PHI is recorded first (shared.audit);
   if the record cannot be written the request fails with 503.

Patient ids in requests and responses are the clinic's own ("patient-001"), never
the stored key.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from services.results.erasure import (
    ErasureRequested,
    ErasureStore,
    Receipt,
    encode_erasure,
    new_erasure_id,
    receipt_of,
    wait_for_erasure,
)
from services.results.dosing import DosingReviews
from services.results.review_api import review_routes
from services.results.settings import ResultsSettings
from shared.audit import AuditEvent, AuditTrail, install_audit_failure_handler
from services.results.console.router import open_paths as console_open_paths
from shared.auth import (
    API_KEY_ROLES,
    OPEN_PATHS,
    ApiKeyStore,
    Authenticator,
    allow,
    install_authentication,
    principal_dependency,
)
from shared.domain import JOB_ID_PATTERN, PATIENT_ID_PATTERN
from shared.history import HistoryReader
from shared.http import install_readable_validation_errors, install_request_body_limit
from shared.identity import Principal, Role
from shared.findings import ResultItem
from shared.patients import PatientKey
from shared.job import COMPLETED, FAILED, Job, JobStatus
from shared.jobs import JobStore

JobId = Path(pattern=JOB_ID_PATTERN.pattern, description="e.g. job-abc123def456")
PatientIdPath = Path(pattern=PATIENT_ID_PATTERN, description="e.g. patient-001 (your clinic's id)")
READERS = (Role.CLINICIAN, Role.CLINIC_ADMIN, Role.EHR_INTEGRATION)
ADMIN = (Role.CLINIC_ADMIN,)
REVIEWERS = (Role.CLINICIAN, Role.CLINIC_ADMIN)
_ERASURE_ID = re.compile(r"^erasure-[0-9a-f]{16}$")

Enqueue = Callable[[str], Awaitable[str]]  # a message body -> its SQS id


class JobDetail(BaseModel):
    job: dict[str, Any]
    result: ResultItem | None = None


class PatientJobs(BaseModel):
    patient_id: str
    count: int
    jobs: list[JobStatus]


class PatientResults(BaseModel):
    patient_id: str
    count: int
    results: list[ResultItem]
    next_token: str | None = None


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


def _b64(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def _unb64(token: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None


def encode_token(after: dict[str, str]) -> str:
    return _b64(after)


def decode_token(token: str, stored_key: str) -> dict[str, str]:
    after = _unb64(token)
    if not isinstance(after, dict) or not isinstance(after.get("timestamp"), str):
        raise HTTPException(status_code=422, detail="next_token: not a token this API returned")
    if after.get("user_id") != stored_key:
        raise HTTPException(status_code=422, detail="next_token: it belongs to another patient's results")
    return after


def _utc_stamp(moment: datetime) -> str:
    """An ISO instant as the audit keys write it (naive means UTC)."""
    aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return aware.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def shown_result(item: dict[str, Any]) -> ResultItem:
    """A stored item, parsed once as it is read, as the clinic sees it: its own patient id, and its
    clinic (stored in the key) named. One that does not parse is a server error naming the field."""
    key = PatientKey.parse(item["user_id"])
    clinic = {"clinic_id": key.clinic_id} if key.clinic_id else {}
    return ResultItem.model_validate({**item, **clinic, "user_id": key.patient})


def shown_job(job: Job) -> dict[str, Any]:
    return {**job.shown_item(), "patient_id": job.patient_id.patient}


@dataclass
class ResultsAccess:
    authenticator: Authenticator
    audit: AuditTrail
    api_keys: ApiKeyStore
    erasures: ErasureStore
    enqueue_erasure: Enqueue


def create_app(settings: ResultsSettings, jobs: JobStore, history: HistoryReader, access: ResultsAccess,
               console: APIRouter | None = None, console_prefix: str = "/console",
               reviews: DosingReviews | None = None) -> FastAPI:
    """The API, and the clinician console (`console`, services/results/console) mounted beside it."""
    app = FastAPI(
        title="SchizoDot results API",
        version="1",
        description="A clinic's patients' analysis history and job status, erasure, the audit trail and API keys. "
                    "Send a bearer token (`Authorization: Bearer …`) or an API key (`X-API-Key`). "
                    f"The clinician console is at {console_prefix}/.",
    )
    if console is not None:
        paths, prefixes = console_open_paths(console_prefix)
        install_authentication(app, access.authenticator, open_paths=OPEN_PATHS | set(paths),
                               open_prefixes=prefixes, login_pages={console_prefix: f"{console_prefix}/login"})
        app.include_router(console)
    else:
        install_authentication(app, access.authenticator)
    install_readable_validation_errors(app)
    install_audit_failure_handler(app)
    install_request_body_limit(app)  # forms (the console's sign-in included) and JSON: small
    principal = principal_dependency(access.authenticator)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # Declared for the OpenAPI docs ("Authorize"); the middleware enforces them.
    documented_auth = [Depends(APIKeyHeader(name="X-API-Key", auto_error=False)),
                       Depends(HTTPBearer(auto_error=False))]
    readers = allow(principal, *READERS)
    admins = allow(principal, *ADMIN)
    for router in (job_routes(jobs, history, access.audit, readers),
                   patient_routes(jobs, history, access.audit, readers, settings.api_max_page_size),
                   erasure_routes(access, admins, settings.erasure_wait_seconds),
                   audit_routes(access.audit, admins, settings.api_max_page_size),
                   api_key_routes(access, admins)):
        app.include_router(router, dependencies=documented_auth)
    if reviews is not None:
        app.include_router(review_routes(reviews, allow(principal, *REVIEWERS), readers), dependencies=documented_auth)
    return app


async def _job_of(jobs: JobStore, audit: AuditTrail, who: Principal, job_id: str, action: str) -> Job:
    """The caller's clinic's job, or 404 in the words used for a job that does not exist."""
    job = await jobs.get(job_id)
    if job is None or not who.owns(job.clinic_id):
        await audit.record(AuditEvent(action, who, outcome="not_found", job_id=job_id))
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return job


def job_routes(jobs: JobStore, history: HistoryReader, audit: AuditTrail, readers) -> APIRouter:
    router = APIRouter(tags=["jobs"])

    @router.get("/api/v1/jobs/{job_id}", response_model=JobStatus)
    async def job_status(job_id: str = JobId, who: Principal = Depends(readers)) -> JobStatus:
        """Access pattern 2: a job's status and progress."""
        job = await _job_of(jobs, audit, who, job_id, "job.read")
        await audit.record(AuditEvent("job.read", who, patient_id=job.patient_id.patient, job_id=job_id))
        return JobStatus.of(job, with_patient=True)

    @router.get("/api/v1/jobs/{job_id}/detail", response_model=JobDetail)
    async def job_detail(job_id: str = JobId, who: Principal = Depends(readers)) -> JobDetail:
        """The whole job item (pipeline stages included) and, once completed, its result."""
        job = await _job_of(jobs, audit, who, job_id, "job.detail_read")
        result = await history.for_job(job.patient_id, job_id) if job.status == COMPLETED else None
        await audit.record(AuditEvent("job.detail_read", who, patient_id=job.patient_id.patient,
                                      job_id=job_id))
        return JobDetail(job=shown_job(job), result=shown_result(result) if result else None)

    @router.get("/api/v1/results/{job_id}", response_model=ResultItem, tags=["results"])
    async def result_for_job(job_id: str = JobId, who: Principal = Depends(readers)) -> ResultItem:
        """The SchizodotUsers item of one job."""
        job = await _job_of(jobs, audit, who, job_id, "result.read")
        patient = job.patient_id.patient
        if job.status != COMPLETED:
            await audit.record(AuditEvent("result.read", who, outcome="not_found", patient_id=patient, job_id=job_id))
            why = f": {job.error}" if job.status == FAILED and job.error else ""
            raise HTTPException(status_code=404, detail=f"job {job_id} has no result ({job.status}{why})")
        item = await history.for_job(job.patient_id, job_id)
        await audit.record(AuditEvent("result.read", who, outcome="success" if item else "not_found",
                                      patient_id=patient, job_id=job_id))
        if item is None:
            raise HTTPException(status_code=404, detail=f"job {job_id} is completed but its result is missing")
        return shown_result(item)

    return router


def patient_routes(jobs: JobStore, history: HistoryReader, audit: AuditTrail, readers, max_page_size: int
                   ) -> APIRouter:
    router = APIRouter(tags=["patients"])

    @router.get("/api/v1/patients/{patient_id}/jobs", response_model=PatientJobs)
    async def patient_jobs(
        patient_id: str = PatientIdPath,
        limit: int = Query(20, ge=1, le=max_page_size),
        status_filter: Literal["queued", "processing", "completed", "failed"] | None = None,
        who: Principal = Depends(readers),
    ) -> PatientJobs:
        """Access pattern 4: a patient's jobs, newest first (GSI), optionally of one status."""
        found = await jobs.list_for_patient(who.key_of(patient_id), limit=limit, status=status_filter)
        await audit.record(AuditEvent("patient.jobs_read", who, patient_id=patient_id, detail={"count": len(found)}))
        return PatientJobs(patient_id=patient_id, count=len(found),
                           jobs=[JobStatus.of(job, with_patient=True) for job in found])

    @router.get("/api/v1/patients/{patient_id}/results", response_model=PatientResults)
    async def patient_results(
        patient_id: str = PatientIdPath,
        limit: int = Query(10, ge=1, le=max_page_size),
        next_token: str | None = Query(None, max_length=2048, description="from the previous page"),
        who: Principal = Depends(readers),
    ) -> PatientResults:
        """Access pattern 6: a patient's results, newest first, a page at a time."""
        stored = who.key_of(patient_id)
        after = decode_token(next_token, stored) if next_token else None
        items, more = await history.page(stored, limit, after)
        await audit.record(AuditEvent("patient.results_read", who, patient_id=patient_id,
                                      detail={"count": len(items)}))
        return PatientResults(patient_id=patient_id, count=len(items), results=[shown_result(i) for i in items],
                              next_token=encode_token(more) if more else None)

    return router


def erasure_routes(access: ResultsAccess, admins, wait_seconds: float) -> APIRouter:
    router = APIRouter(tags=["erasure"])

    @router.delete("/api/v1/patients/{patient_id}", response_model=Receipt,
                   responses={202: {"description": "still running: follow /api/v1/erasures/{erasure_id}"}})
    async def erase_patient(patient_id: str = PatientIdPath, who: Principal = Depends(admins)):
        """Erase everything stored of a patient (media, artifacts, evidence frames, jobs, results, links).
        Idempotent: a patient with nothing left gets a receipt with zero counts."""
        assert who.clinic_id is not None
        erasure_id = new_erasure_id()
        await access.audit.record(AuditEvent("erasure.requested", who, patient_id=patient_id,
                                             detail={"erasure_id": erasure_id}))
        await access.erasures.create(erasure_id, who.clinic_id, access.audit.ref_of(who, patient_id) or "",
                                     who.subject)
        await access.enqueue_erasure(encode_erasure(
            ErasureRequested(erasure_id=erasure_id, clinic_id=who.clinic_id, patient_id=patient_id)))
        record = await wait_for_erasure(access.erasures, erasure_id, wait_seconds)
        receipt = receipt_of(record or {"erasure_id": erasure_id, "status": "requested", "requested_at": ""},
                             patient_id)
        if receipt.status != "done":
            return JSONResponse(status_code=202, content=receipt.model_dump(),
                                headers={"Location": f"/api/v1/erasures/{erasure_id}"})
        return receipt

    @router.get("/api/v1/erasures/{erasure_id}", response_model=Receipt)
    async def erasure_status(erasure_id: str, who: Principal = Depends(admins)) -> Receipt:
        """An erasure's receipt (its counts once the inventory is taken)."""
        record = await access.erasures.get(erasure_id) if _ERASURE_ID.match(erasure_id) else None
        if record is None or not who.owns(record.get("clinic_id")):
            raise HTTPException(status_code=404, detail=f"no erasure {erasure_id}")
        return receipt_of(record)

    return router


def audit_routes(audit: AuditTrail, admins, max_page_size: int) -> APIRouter:
    router = APIRouter(tags=["audit"])

    @router.get("/api/v1/audit", response_model=AuditPage)
    async def audit_trail(
        patient_id: str | None = Query(None, pattern=PATIENT_ID_PATTERN, description="only this patient's records"),
        since: datetime | None = Query(None, description="ISO 8601; records at or after it"),
        limit: int = Query(50, ge=1, le=max_page_size),
        next_token: str | None = Query(None, max_length=2048, description="from the previous page"),
        who: Principal = Depends(admins),
    ) -> AuditPage:
        """Who read or wrote what in your clinic, oldest first, a page at a time (a page may hold
        fewer records than `limit` while `next_token` is not null)."""
        assert who.clinic_id is not None
        after = None
        if next_token:
            decoded = _unb64(next_token)
            after = decoded.get("after") if isinstance(decoded, dict) else None
            if not isinstance(after, str) or not after.startswith(f"audit/{who.clinic_id}/"):
                raise HTTPException(status_code=422, detail="next_token: not a token this API returned")
        stamp = _utc_stamp(since) if since else None
        reference = audit.ref_of(who, patient_id) if patient_id else None
        records, more = await audit.query(who.clinic_id, since=stamp, patient_ref_=reference, limit=limit, after=after)
        # Recorded without the patient: a read of the trail must not add to the very listing it pages through.
        await audit.record(AuditEvent("audit.read", who, detail={"count": len(records),
                                                                 "patient_filter": patient_id is not None}))
        return AuditPage(count=len(records), records=records, next_token=_b64({"after": more}) if more else None)

    return router


def api_key_routes(access: ResultsAccess, admins) -> APIRouter:
    router = APIRouter(tags=["API keys"])
    keys, audit = access.api_keys, access.audit

    @router.post("/api/v1/api-keys", response_model=CreatedApiKey, status_code=201)
    async def create_key(body: NewApiKey, who: Principal = Depends(admins)) -> CreatedApiKey:
        """A key for a system of your clinic (an EHR integration, a clinic app backend)."""
        assert who.clinic_id is not None
        role = Role(body.role)
        assert role in API_KEY_ROLES
        key, secret = await keys.create(body.name, role, who.clinic_id, who.subject, body.expires_in)
        await audit.record(AuditEvent("api_key.create", who, detail={"key_id": key.key_id, "role": role.value,
                                                                     "expires_at": key.expires_at}))
        return CreatedApiKey(**key.view(), api_key=secret)

    @router.get("/api/v1/api-keys", response_model=list[ApiKeyView])
    async def list_keys(who: Principal = Depends(admins)) -> list[ApiKeyView]:
        assert who.clinic_id is not None
        return [ApiKeyView(**key.view()) for key in await keys.list_for_clinic(who.clinic_id)]

    @router.delete("/api/v1/api-keys/{key_id}", response_model=ApiKeyView)
    async def revoke_key(key_id: str = Path(pattern=r"^[0-9a-f]{16}$"), who: Principal = Depends(admins)
                         ) -> ApiKeyView:
        """Revoke a key: it is refused from the next request on (idempotent)."""
        assert who.clinic_id is not None
        key = await keys.revoke(key_id, who.clinic_id)
        if key is None:
            raise HTTPException(status_code=404, detail=f"no API key {key_id}")
        await audit.record(AuditEvent("api_key.revoke", who, detail={"key_id": key_id}))
        return ApiKeyView(**key.view())

    return router
