"""The check-in HTTP API a clinic app talks to (the seed system's routes).

POST /api/v1/analyze creates the job and hands back a presigned upload URL;
the job starts when the upload lands (S3 notification on the ingest queue).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

from fastapi import FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel

from services.ingest.settings import UploadPolicy
from shared.domain import CheckinRequest, job_id_for_event, new_job_id, upload_key, utc_now
from shared.http import install_readable_validation_errors
from shared.job import JobStatus, new_job
from shared.jobs import JobStore
from shared.tracing import start_job_trace

# (key, content type, expiry seconds) -> presigned PUT URL
UploadSigner = Callable[[str, str, int], Awaitable[str]]


class AnalyzeResponse(BaseModel):
    job_id: str
    status: str
    s3_key: str
    upload_url: str
    upload_method: str = "PUT"
    upload_headers: dict[str, str]
    expires_in: int
    expires_at: str
    trace_id: str | None = None  # find the job's trace in Jaeger by it


def create_app(uploads: UploadPolicy, jobs: JobStore, sign_upload: UploadSigner) -> FastAPI:
    app = FastAPI(title="SchizoDot ingest API", version="1")

    install_readable_validation_errors(app)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/v1/analyze", response_model=AnalyzeResponse, status_code=201)
    async def analyze(
        request: CheckinRequest,
        http_request: Request,
        response: Response,
        idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=8, max_length=200),
    ) -> AnalyzeResponse:
        # With an Idempotency-Key, a client that retries after losing the answer gets the same job back.
        job_id = job_id_for_event(f"idempotency-key:{request.patient_id}", idempotency_key) \
            if idempotency_key else new_job_id()
        with start_job_trace(job_id, http_request.headers) as job_trace:  # the job's trace starts here
            created_at = utc_now()
            key = upload_key(request.patient_id, job_id, request.filename, created_at)
            status = "queued"
            created = await jobs.create(new_job(
                job_id, patient_id=request.patient_id, s3_key=key, filename=request.filename,
                content_type=request.content_type, created_at=created_at, metadata=request.metadata,
                message="Waiting for the upload", source="api", trace_fields=job_trace,
            ))
            if not created:
                existing = await jobs.get(job_id)
                if existing is None or (existing.patient_id, existing.filename, existing.content_type) != (
                        request.patient_id, request.filename, request.content_type):
                    raise HTTPException(status_code=409,
                                        detail="this Idempotency-Key was already used for another check-in")
                key, status = existing.s3_key, existing.status
                job_trace = {"trace_id": existing.pipeline.trace_id}
                response.status_code = 200
            expires = uploads.upload_url_expiry_seconds
            url = await sign_upload(key, request.content_type, expires)
        return AnalyzeResponse(
            job_id=job_id,
            status=status,
            s3_key=key,
            upload_url=url,
            upload_headers={"Content-Type": request.content_type},
            expires_in=expires,
            expires_at=(datetime.now(timezone.utc) + timedelta(seconds=expires)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            trace_id=job_trace.get("trace_id"),
        )

    @app.get("/api/v1/jobs/{job_id}", response_model=JobStatus)
    async def job_status(job_id: str) -> JobStatus:
        job = await jobs.get(job_id)
        if job is None:
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        # This API takes uploads without authentication: it never shows whose job it is.
        return JobStatus.of(job, with_patient=False)

    return app
