"""The read API of the seed system: job status and a patient's history.

Every route except /health and the OpenAPI docs needs a credential from the
settings: an API key in `X-API-Key` or a bearer token in `Authorization`.
The check runs before routing and validation, so a caller without one gets the
same 401 whatever the path, and learns nothing (not even whether a job exists).
Reads only: jobs through the jobs repository, results through the patient history.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader, HTTPBearer
from pydantic import BaseModel, ConfigDict

from services.results.settings import ResultsSettings
from shared.domain import JOB_ID_PATTERN, PATIENT_ID_PATTERN
from shared.history import HistoryReader
from shared.http import install_readable_validation_errors
from shared.job import COMPLETED, FAILED, Job, JobStatus
from shared.jobs import JobStore

OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})

JobId = Path(pattern=JOB_ID_PATTERN.pattern, description="e.g. job-abc123def456")
PatientIdPath = Path(pattern=PATIENT_ID_PATTERN, description="e.g. patient-001")


class ResultItem(BaseModel):
    """A SchizodotUsers item (access pattern 6), in the seed's shape."""

    model_config = ConfigDict(extra="allow")

    user_id: str
    timestamp: str
    job_id: str
    s3_key: str
    analysis_type: str
    analyzed_at: str
    processing_time_seconds: float | None = None
    status: str
    results: dict[str, Any]


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


def _matches(candidate: str, secrets: tuple[str, ...]) -> bool:
    # Compared with every configured secret in constant time, so timing tells nothing.
    found = False
    for secret in secrets:
        found |= hmac.compare_digest(candidate.encode(), secret.encode())
    return found


def authenticated(headers: Any, settings: ResultsSettings) -> bool:
    key = headers.get("x-api-key")
    if key and _matches(key, settings.api_keys):
        return True
    scheme, _, token = (headers.get("authorization") or "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip()) and _matches(token.strip(), settings.api_bearer_tokens)


def encode_token(after: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(after, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_token(token: str, patient_id: str) -> dict[str, str]:
    try:
        after = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        after = None
    if not isinstance(after, dict) or not isinstance(after.get("timestamp"), str):
        raise HTTPException(status_code=422, detail="next_token: not a token this API returned")
    if after.get("user_id") != patient_id:
        raise HTTPException(status_code=422, detail="next_token: it belongs to another patient's results")
    return after


def create_app(settings: ResultsSettings, jobs: JobStore, history: HistoryReader) -> FastAPI:
    app = FastAPI(
        title="SchizoDot results API",
        version="1",
        description="Job status and patients' analysis history. Send an API key in `X-API-Key` "
                    "or a bearer token in `Authorization`.",
    )
    require_credentials(app, settings)
    install_readable_validation_errors(app)

    @app.get("/health", tags=["health"])
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    # Declared for the OpenAPI docs ("Authorize"); `require_credentials` enforces them.
    documented_auth = [Depends(APIKeyHeader(name="X-API-Key", auto_error=False)),
                       Depends(HTTPBearer(auto_error=False))]
    for router in (job_routes(jobs, history), patient_routes(jobs, history, settings.api_max_page_size),
                   result_routes(jobs, history)):
        app.include_router(router, dependencies=documented_auth)
    return app


def require_credentials(app: FastAPI, settings: ResultsSettings) -> None:
    """Every path but the open ones answers 401 without a credential, before routing and validation."""

    @app.middleware("http")
    async def check(request: Request, call_next):
        if request.url.path not in OPEN_PATHS and not authenticated(request.headers, settings):
            return JSONResponse(status_code=401, content={"detail": "authentication required"},
                                headers={"WWW-Authenticate": "Bearer"})
        return await call_next(request)


async def _job_or_404(jobs: JobStore, job_id: str) -> Job:
    job = await jobs.get(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return job


def job_routes(jobs: JobStore, history: HistoryReader) -> APIRouter:
    router = APIRouter(tags=["jobs"])

    @router.get("/api/v1/jobs/{job_id}", response_model=JobStatus)
    async def job_status(job_id: str = JobId) -> JobStatus:
        """Access pattern 2: a job's status and progress."""
        return JobStatus.of(await _job_or_404(jobs, job_id), with_patient=True)

    @router.get("/api/v1/jobs/{job_id}/detail", response_model=JobDetail)
    async def job_detail(job_id: str = JobId) -> JobDetail:
        """The whole job item (pipeline stages included) and, once completed, its result."""
        job = await _job_or_404(jobs, job_id)
        result = await history.for_job(job.patient_id, job_id) if job.status == COMPLETED else None
        return JobDetail(job=job.to_item(), result=result)

    return router


def patient_routes(jobs: JobStore, history: HistoryReader, max_page_size: int) -> APIRouter:
    router = APIRouter(tags=["patients"])

    @router.get("/api/v1/patients/{patient_id}/jobs", response_model=PatientJobs)
    async def patient_jobs(
        patient_id: str = PatientIdPath,
        limit: int = Query(20, ge=1, le=max_page_size),
        status_filter: Literal["queued", "processing", "completed", "failed"] | None = None,
    ) -> PatientJobs:
        """Access pattern 4: a patient's jobs, newest first (GSI), optionally of one status."""
        found = await jobs.list_for_patient(patient_id, limit=limit, status=status_filter)
        return PatientJobs(patient_id=patient_id, count=len(found),
                           jobs=[JobStatus.of(job, with_patient=True) for job in found])

    @router.get("/api/v1/patients/{patient_id}/results", response_model=PatientResults)
    async def patient_results(
        patient_id: str = PatientIdPath,
        limit: int = Query(10, ge=1, le=max_page_size),
        next_token: str | None = Query(None, max_length=2048, description="from the previous page"),
    ) -> PatientResults:
        """Access pattern 6: a patient's results, newest first, a page at a time."""
        after = decode_token(next_token, patient_id) if next_token else None
        items, more = await history.page(patient_id, limit, after)
        return PatientResults(patient_id=patient_id, count=len(items), results=items,
                              next_token=encode_token(more) if more else None)

    return router


def result_routes(jobs: JobStore, history: HistoryReader) -> APIRouter:
    router = APIRouter(tags=["results"])

    @router.get("/api/v1/results/{job_id}", response_model=ResultItem)
    async def result_for_job(job_id: str = JobId) -> ResultItem:
        """The SchizodotUsers item of one job."""
        job = await _job_or_404(jobs, job_id)
        if job.status != COMPLETED:
            why = f": {job.error}" if job.status == FAILED and job.error else ""
            raise HTTPException(status_code=404, detail=f"job {job_id} has no result ({job.status}{why})")
        item = await history.for_job(job.patient_id, job_id)
        if item is None:
            raise HTTPException(status_code=404, detail=f"job {job_id} is completed but its result is missing")
        return ResultItem(**item)

    return router
