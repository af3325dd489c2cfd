"""The results API: a clinic's patients' history and job status here; erasure
(services/results/erasure/api.py), the audit trail and API keys (admin.py) and dosing
reviews (reviews.py) mounted beside them by `create_app`. Routes are top-level functions that
reach the API's state and the caller through dependencies (context.py).

Every route but /health and the OpenAPI docs needs a credential (shared.identity.auth),
checked before routing and validation: without one the answer is the same 401
whatever the path. Then, in this order:

1. the role: a route names the roles that may call it; any other gets 403, the
   only place 403 is used;
2. the clinic: patients are read under the caller's clinic's patient key
   (shared.identity.principal), and a job of another clinic is 404 in exactly the words of
   a job that does not exist;
3. the audit trail: every response carrying PHI is recorded first (shared.identity.audit);
   if the record cannot be written the request fails with 503.

Patient ids in requests and responses are the clinic's own ("patient-001"), never
the stored key.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel

from services.results.api import admin
from services.results.api import reviews as reviews_api
from services.results.api.context import PAGE_LIMIT_DOC, PAGE_SIZE_CEILING, READER, Enqueue, ResultsApi, api_of
from services.results.api.params import JobId, PatientIdPath, decode_token, encode_token
from services.results.console.router import open_paths as console_open_paths
from services.results.dosing import DosingReviews
from services.results.erasure import api as erasure
from services.results.erasure.store import ErasureStore
from services.results.settings import ResultsSettings
from shared.aws.history import HistoryReader
from shared.aws.jobs import JobStore
from shared.domain.findings import ResultItem
from shared.domain.job import COMPLETED, FAILED, Job, JobStatus
from shared.domain.stored_results import stored_result
from shared.identity.audit import AuditEvent, AuditTrail, install_audit_failure_handler
from shared.identity.auth import Authenticator
from shared.identity.credentials import ApiKeyStore
from shared.identity.middleware import OPEN_PATHS, install_authentication, principal_dependency
from shared.identity.principal import Principal
from shared.runtime.http import install_readable_validation_errors, install_request_body_limit


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
    app.state.results_api = ResultsApi(
        principal=principal_dependency(access.authenticator), jobs=jobs, history=history, audit=access.audit,
        api_keys=access.api_keys, erasures=access.erasures, enqueue_erasure=access.enqueue_erasure, reviews=reviews,
        max_page_size=settings.api_max_page_size, erasure_wait_seconds=settings.erasure_wait_seconds)
    app.include_router(health_router)
    # Declared for the OpenAPI docs ("Authorize"); the middleware enforces them.
    documented_auth = [Depends(APIKeyHeader(name="X-API-Key", auto_error=False)),
                       Depends(HTTPBearer(auto_error=False))]
    for routes in (job_router, patient_router, erasure.router, admin.audit_router, admin.api_key_router,
                   *((reviews_api.router,) if reviews is not None else ())):
        app.include_router(routes, dependencies=documented_auth)
    _document_page_size(app, settings.api_max_page_size)
    return app


def _document_page_size(app: FastAPI, max_page_size: int) -> None:
    """The OpenAPI schema names the configured page size as `limit`'s maximum (the routes declare the
    setting's ceiling; `ResultsApi.page_limit` enforces the configured size), as FastAPI's docs extend it."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        fresh = app.openapi_schema is None
        schema = generate()  # FastAPI's own, cached on the app
        for operation in (op for path in schema["paths"].values() for op in path.values()) if fresh else ():
            for parameter in operation.get("parameters", []):
                if parameter["name"] == "limit" and parameter["schema"].get("maximum") == PAGE_SIZE_CEILING:
                    parameter["schema"]["maximum"] = max_page_size
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


health_router = APIRouter(tags=["health"])
job_router = APIRouter(tags=["jobs"])
patient_router = APIRouter(tags=["patients"])


@health_router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


async def _job_of(api: ResultsApi, who: Principal, job_id: str, action: str) -> Job:
    """The caller's clinic's job, or 404 in the words used for a job that does not exist."""
    job = await api.jobs.get(job_id)
    if job is None or not who.owns(job.clinic_id):
        await api.audit.record(AuditEvent(action, who, outcome="not_found", job_id=job_id))
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return job


@job_router.get("/api/v1/jobs/{job_id}", response_model=JobStatus)
async def job_status(job_id: str = JobId, who: Principal = Depends(READER), api: ResultsApi = Depends(api_of)
                     ) -> JobStatus:
    """Access pattern 2: a job's status and progress."""
    job = await _job_of(api, who, job_id, "job.read")
    await api.audit.record(AuditEvent("job.read", who, patient_id=job.patient_id.patient, job_id=job_id))
    return JobStatus.of(job, with_patient=True)


@job_router.get("/api/v1/jobs/{job_id}/detail", response_model=JobDetail)
async def job_detail(job_id: str = JobId, who: Principal = Depends(READER), api: ResultsApi = Depends(api_of)
                     ) -> JobDetail:
    """The whole job item (pipeline stages included) and, once completed, its result."""
    job = await _job_of(api, who, job_id, "job.detail_read")
    result = await api.history.for_job(job.patient_id, job_id) if job.status == COMPLETED else None
    await api.audit.record(AuditEvent("job.detail_read", who, patient_id=job.patient_id.patient, job_id=job_id))
    return JobDetail(job=shown_job(job), result=stored_result(result).shown() if result else None)


@job_router.get("/api/v1/results/{job_id}", response_model=ResultItem, tags=["results"])
async def result_for_job(job_id: str = JobId, who: Principal = Depends(READER), api: ResultsApi = Depends(api_of)
                         ) -> ResultItem:
    """The SchizodotUsers item of one job."""
    job = await _job_of(api, who, job_id, "result.read")
    patient = job.patient_id.patient
    if job.status != COMPLETED:
        await api.audit.record(AuditEvent("result.read", who, outcome="not_found", patient_id=patient, job_id=job_id))
        why = f": {job.error}" if job.status == FAILED and job.error else ""
        raise HTTPException(status_code=404, detail=f"job {job_id} has no result ({job.status}{why})")
    item = await api.history.for_job(job.patient_id, job_id)
    await api.audit.record(AuditEvent("result.read", who, outcome="success" if item else "not_found",
                                      patient_id=patient, job_id=job_id))
    if item is None:
        raise HTTPException(status_code=404, detail=f"job {job_id} is completed but its result is missing")
    return stored_result(item).shown()


@patient_router.get("/api/v1/patients/{patient_id}/jobs", response_model=PatientJobs)
async def patient_jobs(
    patient_id: str = PatientIdPath,
    limit: int = Query(20, ge=1, le=PAGE_SIZE_CEILING, description=PAGE_LIMIT_DOC),
    status_filter: Literal["queued", "processing", "completed", "failed"] | None = None,
    who: Principal = Depends(READER),
    api: ResultsApi = Depends(api_of),
) -> PatientJobs:
    """Access pattern 4: a patient's jobs, newest first (GSI), optionally of one status."""
    found = await api.jobs.list_for_patient(who.key_of(patient_id), limit=api.page_limit(limit), status=status_filter)
    await api.audit.record(AuditEvent("patient.jobs_read", who, patient_id=patient_id, detail={"count": len(found)}))
    return PatientJobs(patient_id=patient_id, count=len(found),
                       jobs=[JobStatus.of(job, with_patient=True) for job in found])


@patient_router.get("/api/v1/patients/{patient_id}/results", response_model=PatientResults)
async def patient_results(
    patient_id: str = PatientIdPath,
    limit: int = Query(10, ge=1, le=PAGE_SIZE_CEILING, description=PAGE_LIMIT_DOC),
    next_token: str | None = Query(None, max_length=2048, description="from the previous page"),
    who: Principal = Depends(READER),
    api: ResultsApi = Depends(api_of),
) -> PatientResults:
    """Access pattern 6: a patient's results, newest first, a page at a time."""
    stored = who.key_of(patient_id)
    after = decode_token(next_token, stored) if next_token else None
    items, more = await api.history.page(stored, api.page_limit(limit), after)
    await api.audit.record(AuditEvent("patient.results_read", who, patient_id=patient_id,
                                      detail={"count": len(items)}))
    return PatientResults(patient_id=patient_id, count=len(items), results=[stored_result(i).shown() for i in items],
                          next_token=encode_token(more) if more else None)
