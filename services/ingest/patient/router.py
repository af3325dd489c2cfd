"""The patient check-in page and its upload API, as a router the ingest service mounts.

The page (`GET {page_path}`) is static and holds no PHI: the one-time link
carries its token in the URL fragment (`/checkin#token=...`), which browsers
never send to a server or put in a Referer. The page's script sends it as a
bearer token to the API below, where `link_principal` (the ingest service's
patient-link verifier, issue 12) turns it into a `Principal` bound to one
patient and one check-in. Every API route:

- 403 for a principal that is not a patient link (a role that may not call it);
- 404 when the link's check-in does not exist, is another patient's, or belongs
  to another clinic, in the same words, so nothing can be probed.

The API never returns findings: only whether the recording arrived and how far
its analysis has come. Routes (under `api_prefix`):

  GET  /session          the clinic's script, the upload limits, the check-in's state
  POST /upload           start a multipart upload: {content_type, size} -> part URLs
  POST /upload/resume    {upload_id, size} -> parts S3 has, fresh URLs for the rest (410: cannot resume)
  POST /upload/complete  {upload_id, size} -> "received" (the S3 event starts the pipeline)
  GET  /status           state and progress, for the "received" and thank-you screens
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from services.ingest.patient.script import CheckinScript, ScriptCatalog
from services.ingest.patient.uploads import MultipartStore, UploadGone, UploadPolicy, UploadRefused
from shared.identity import Principal, Role

HERE = Path(__file__).resolve().parent
STATIC_FILES = {"checkin.js": "text/javascript; charset=utf-8", "checkin.css": "text/css; charset=utf-8"}
NOT_FOUND = "this check-in link does not lead to a check-in"
UPLOAD_ID = r"^[A-Za-z0-9._~=+/-]{1,1024}$"

State = Literal["awaiting_recording", "received", "analysing", "done", "not_analysed", "closed"]


class CheckinJobs(Protocol):
    """Reads SchizodotJobs (shared.jobs.JobsRepository has this method)."""

    async def get(self, job_id: str) -> dict[str, Any] | None: ...


def job_clinic(job: dict[str, Any]) -> str | None:
    """The clinic a job belongs to (issue 12 records it in the job's metadata)."""
    return (job.get("metadata") or {}).get("clinic_id")


class StatusView(BaseModel):
    state: State
    progress: int = Field(0, ge=0, le=100)


class SessionView(StatusView):
    checkin_id: str = Field(description="the job id: where the page keeps an unsent recording on the device")
    script: CheckinScript
    max_bytes: int
    part_bytes: int
    accepted_types: tuple[str, ...]


class UploadStart(BaseModel):
    content_type: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=1)


class UploadContinue(BaseModel):
    upload_id: str = Field(pattern=UPLOAD_ID)
    size: int = Field(ge=1)


class SignedPart(BaseModel):
    number: int
    size: int
    url: str


class UploadPlan(BaseModel):
    upload_id: str
    size: int
    part_bytes: int
    content_type: str | None = None
    parts: list[SignedPart] = Field(description="the parts still to send, with URLs")
    done: list[int] = Field(default_factory=list, description="parts S3 already holds")
    expires_in: int


def _page_headers(upload_origin: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"media-src 'self' blob:; connect-src 'self' {upload_origin}; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Permissions-Policy": "camera=(self), microphone=(self)",
        "Cache-Control": "no-store",
    }


def create_patient_router(
    *,
    link_principal: Callable[..., Any],
    jobs: CheckinJobs,
    store: MultipartStore,
    scripts: ScriptCatalog,
    policy: UploadPolicy,
    upload_origin: str,
    page_path: str = "/checkin",
    api_prefix: str = "/api/v1/checkin",
) -> APIRouter:
    """The patient page and its API.

    `link_principal`: a FastAPI dependency returning the caller's `Principal`
    (401 itself for a missing, expired or used link). `upload_origin`: the
    scheme://host[:port] the phone uploads to (the S3 endpoint it reaches), for
    the page's Content-Security-Policy.
    """
    router = APIRouter()
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())
    page = templates.get_template("checkin.html").render(
        api_prefix=api_prefix, static_prefix=f"{page_path}/static")
    headers = _page_headers(upload_origin)

    @router.get(page_path, response_class=HTMLResponse, include_in_schema=False)
    async def checkin_page() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @router.get(page_path + "/static/{name}", include_in_schema=False)
    async def checkin_static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(status_code=404, detail="not found")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def linked_job(principal: Principal = Depends(link_principal)) -> tuple[Principal, dict[str, Any]]:
        if principal.role is not Role.PATIENT_LINK:
            raise HTTPException(status_code=403, detail="this page is for patients' check-in links")
        job = await jobs.get(principal.job_id) if principal.job_id else None
        if job is None or job.get("patient_id") != principal.patient_id or not principal.owns(job_clinic(job)):
            raise HTTPException(status_code=404, detail=NOT_FOUND)
        return principal, job

    async def state_of(job: dict[str, Any]) -> StatusView:
        status = job.get("status")
        if status == "processing":
            return StatusView(state="analysing", progress=min(int(job.get("progress") or 0), 99))
        if status == "completed":
            return StatusView(state="done", progress=100)
        arrived = await store.exists(job["s3_key"])
        if status == "failed":
            return StatusView(state="not_analysed" if arrived else "closed")
        return StatusView(state="received" if arrived else "awaiting_recording")

    async def awaiting(job: dict[str, Any]) -> None:
        if (await state_of(job)).state != "awaiting_recording":
            raise HTTPException(status_code=409, detail="this check-in was already received; the link is used")

    async def plan(job: dict[str, Any], upload_id: str, size: int, done: set[int],
                   content_type: str | None = None) -> UploadPlan:
        result = UploadPlan(upload_id=upload_id, size=size, part_bytes=policy.part_bytes, content_type=content_type,
                            done=sorted(done), expires_in=policy.url_expiry_seconds, parts=[])
        for part in policy.plan(size):
            if part.number not in done:
                url = await store.presign_part(job["s3_key"], upload_id, part.number, part.size,
                                               policy.url_expiry_seconds)
                result.parts.append(SignedPart(number=part.number, size=part.size, url=url))
        return result

    @router.get(api_prefix + "/session", response_model=SessionView, tags=["patient check-in"])
    async def session(linked: tuple[Principal, dict[str, Any]] = Depends(linked_job)) -> SessionView:
        principal, job = linked
        status = await state_of(job)
        return SessionView(**status.model_dump(), checkin_id=job["job_id"], script=scripts.for_clinic(principal.clinic_id),
                           max_bytes=policy.max_bytes, part_bytes=policy.part_bytes,
                           accepted_types=policy.accepted_types)

    @router.get(api_prefix + "/status", response_model=StatusView, tags=["patient check-in"])
    async def status(linked: tuple[Principal, dict[str, Any]] = Depends(linked_job)) -> StatusView:
        return await state_of(linked[1])

    @router.post(api_prefix + "/upload", response_model=UploadPlan, status_code=201, tags=["patient check-in"])
    async def start_upload(body: UploadStart,
                           linked: tuple[Principal, dict[str, Any]] = Depends(linked_job)) -> UploadPlan:
        _, job = linked
        await awaiting(job)
        try:
            content_type = policy.content_type(body.content_type)
            policy.plan(body.size)
        except UploadRefused as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        key = job["s3_key"]
        for stale in await store.open_uploads(key):  # one open upload per check-in, the newest
            await store.abort(key, stale)
        upload_id = await store.create(key, content_type)
        return await plan(job, upload_id, body.size, set(), content_type)

    @router.post(api_prefix + "/upload/resume", response_model=UploadPlan, tags=["patient check-in"])
    async def resume_upload(body: UploadContinue,
                            linked: tuple[Principal, dict[str, Any]] = Depends(linked_job)) -> UploadPlan:
        _, job = linked
        await awaiting(job)
        try:
            planned = {p.number: p.size for p in policy.plan(body.size)}
            stored = await store.list_parts(job["s3_key"], body.upload_id)
        except UploadRefused as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        except UploadGone as error:
            raise HTTPException(status_code=410, detail="this upload can no longer be resumed") from error
        done = {p.number for p in stored if planned.get(p.number) == p.size}
        return await plan(job, body.upload_id, body.size, done)

    @router.post(api_prefix + "/upload/complete", response_model=StatusView, tags=["patient check-in"])
    async def complete_upload(body: UploadContinue,
                              linked: tuple[Principal, dict[str, Any]] = Depends(linked_job)) -> StatusView:
        _, job = linked
        key = job["s3_key"]
        try:
            parts = policy.check_complete(body.size, await store.list_parts(key, body.upload_id))
            await store.complete(key, body.upload_id, parts)
        except UploadRefused as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        except UploadGone as error:
            if await store.exists(key):  # completed already (a retried request): the same answer
                return await state_of(job)
            raise HTTPException(status_code=410, detail="this upload can no longer be resumed") from error
        return await state_of(job)

    return router
