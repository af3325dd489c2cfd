"""The patient check-in page and its upload API, as a router the ingest service mounts.

The page (`GET {page_path}`) is static and holds no PHI: the one-time link
carries its token in the URL fragment (`/checkin#token=...`), which browsers
never send to a server or put in a Referer. The page's script sends it as a
bearer token to the API below, where shared.auth turns it into a patient-link
`Principal` bound to one clinic, one patient and one check-in. Every API route:

- 403 for a principal that is not a patient link (the one 403, `shared.auth.allow`);
- 404 when the link's check-in does not exist, is another patient's, or belongs
  to another clinic, in the same words, so nothing can be probed.

The API never returns findings: only whether the recording arrived and how far
its analysis has come. Routes (under `api_prefix`):

  GET  /session          the clinic's script, the upload limits, the check-in's state
  POST /upload           start a multipart upload: {content_type, size, timeline?} -> part URLs
                         (the timeline, when each prompt and step was shown, is kept on the job)
  PUT  /upload/part      ?uploadId=&partNumber=: one part, which this API writes to S3 (upload mode
                         "proxy", the default: the page's part URLs point here, and the phone never
                         learns the storage endpoint); in mode "presigned" the part URLs are S3's own
  POST /upload/resume    {upload_id, size} -> parts S3 has, fresh URLs for the rest (410: cannot resume)
  POST /upload/complete  {upload_id, size} -> "received" (the S3 event starts the pipeline)
  GET  /status           state and progress, for the "received" and thank-you screens

**The link's one recording.** A link gives its check-in exactly one recording.
`/upload/complete` hands the recording over: S3 completes the upload from its own
part list, and the link is used up (`PatientLinkStore.consume`, a conditional
write). From then on the link only reads (GET /session, /status) until it expires;
any write with it is 401, and a check-in whose recording has arrived refuses a new
upload (409) whichever way the link was used. (`POST /api/v1/patient-link/upload`,
the single presigned POST of services/ingest/api.py, follows the same rule for
apps that cannot send parts.) Every step is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

import structlog
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel, Field

from services.ingest.patient.script import CheckinScript, ScriptCatalog
from services.ingest.patient.uploads import (
    MultipartPolicy,
    MultipartStore,
    UploadGone,
    UploadMode,
    UploadRefused,
)
from shared.audit import AuditEvent, AuditTrail
from shared.auth import PatientLinkStore, allow
from shared.identity import Principal, Role
from shared.job import COMPLETED, FAILED, PROCESSING, Job
from shared.timeline import TimelineField

log = structlog.get_logger()

HERE = Path(__file__).resolve().parent
STATIC_FILES = {"checkin.js": "text/javascript; charset=utf-8", "checkin.css": "text/css; charset=utf-8"}
NOT_FOUND = "this check-in link does not lead to a check-in"
UPLOAD_ID = r"^[A-Za-z0-9._~=+/-]{1,1024}$"

State = Literal["awaiting_recording", "received", "analysing", "done", "not_analysed", "closed"]


class CheckinJobs(Protocol):
    """Reads SchizodotJobs and keeps a recording's timeline (shared.jobs.JobStore)."""

    async def get(self, job_id: str) -> Job | None: ...

    async def record_timeline(self, job_id: str, timeline: list[dict[str, Any]]) -> bool: ...


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
    timeline: TimelineField | None = Field(None, description="when the page showed each prompt and dosing step, "
                                           "in ms from the start of the recording (shared.timeline)")


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
    send_token: bool = Field(False, description="send the link's token with each part (the parts go to this API)")
    done: list[int] = Field(default_factory=list, description="parts S3 already holds")
    expires_in: int


class PartReceived(BaseModel):
    number: int
    size: int


def _page_headers(upload_origin: str | None) -> dict[str, str]:
    connect = f"'self' {upload_origin}" if upload_origin else "'self'"
    return {
        "Content-Security-Policy": (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"media-src 'self' blob:; connect-src {connect}; frame-ancestors 'none'; "
            "base-uri 'none'; form-action 'none'"
        ),
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "Permissions-Policy": "camera=(self), microphone=(self)",
        "Cache-Control": "no-store",
    }


def open_paths(page_path: str = "/checkin") -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(paths, prefixes) served without a credential: the page and its script and style (no PHI)."""
    return (page_path,), (f"{page_path}/static/",)


def body_limits(policy: MultipartPolicy, api_prefix: str = "/api/v1/checkin") -> dict[str, int]:
    """The request-body limit of the part route (shared.http.install_request_body_limit): one part."""
    return {api_prefix + PART_PATH: policy.part_bytes}


PART_PATH = "/upload/part"


def create_patient_router(
    *,
    principal: Callable[..., Any],
    jobs: CheckinJobs,
    store: MultipartStore,
    scripts: ScriptCatalog,
    policy: MultipartPolicy,
    links: PatientLinkStore,
    audit: AuditTrail,
    upload_mode: UploadMode = "proxy",
    upload_origin: str | None = None,
    page_path: str = "/checkin",
    api_prefix: str = "/api/v1/checkin",
) -> APIRouter:
    """The patient page and its API.

    `principal`: shared.auth's dependency returning the caller's `Principal`
    (401 for a missing, expired or used link). `upload_mode`: parts through this
    API ("proxy") or to presigned S3 URLs ("presigned"), whose endpoint
    `upload_origin` (scheme://host[:port]) the page's Content-Security-Policy
    then names.
    """
    if upload_mode == "presigned" and not upload_origin:
        raise ValueError("presigned uploads need the S3 endpoint's origin for the page's policy")
    patient_links = allow(principal, Role.PATIENT_LINK)
    router = APIRouter()
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())
    page = templates.get_template("checkin.html").render(
        api_prefix=api_prefix, static_prefix=f"{page_path}/static")
    headers = _page_headers(upload_origin if upload_mode == "presigned" else None)
    proxied = upload_mode == "proxy"

    @router.get(page_path, response_class=HTMLResponse, include_in_schema=False)
    async def checkin_page() -> HTMLResponse:
        return HTMLResponse(page, headers=headers)

    @router.get(page_path + "/static/{name}", include_in_schema=False)
    async def checkin_static(name: str) -> Response:
        if name not in STATIC_FILES:
            raise HTTPException(status_code=404, detail="not found")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC_FILES[name],
                        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})

    async def linked_job(who: Principal = Depends(patient_links)) -> tuple[Principal, Job]:
        job = await jobs.get(who.job_id) if who.job_id else None
        if job is None or job.patient_id != who.patient_key or not who.owns(job.clinic_id):
            raise HTTPException(status_code=404, detail=NOT_FOUND)
        return who, job

    async def state_of(job: Job) -> StatusView:
        if job.status == PROCESSING:
            return StatusView(state="analysing", progress=min(job.progress, 99))
        if job.status == COMPLETED:
            return StatusView(state="done", progress=100)
        arrived = await store.exists(job.s3_key)
        if job.status == FAILED:
            return StatusView(state="not_analysed" if arrived else "closed")
        return StatusView(state="received" if arrived else "awaiting_recording")

    async def awaiting(job: Job) -> None:
        if (await state_of(job)).state != "awaiting_recording":
            raise HTTPException(status_code=409, detail="this check-in was already received; the link is used")

    async def record(who: Principal, action: str, job: Job, **detail: Any) -> None:
        await audit.record(AuditEvent(action, who, patient_id=who.patient_id, job_id=job.job_id, detail=detail))

    async def plan(job: Job, upload_id: str, size: int, done: set[int],
                   content_type: str | None = None) -> UploadPlan:
        result = UploadPlan(upload_id=upload_id, size=size, part_bytes=policy.part_bytes, content_type=content_type,
                            done=sorted(done), expires_in=policy.url_expiry_seconds, parts=[], send_token=proxied)
        for part in policy.plan(size):
            if part.number not in done:
                if proxied:
                    url = f"{api_prefix}{PART_PATH}?uploadId={quote(upload_id, safe='')}&partNumber={part.number}"
                else:
                    url = await store.presign_part(job.s3_key, upload_id, part.number, part.size,
                                                   policy.url_expiry_seconds)
                result.parts.append(SignedPart(number=part.number, size=part.size, url=url))
        return result

    @router.get(api_prefix + "/session", response_model=SessionView, tags=["patient check-in"])
    async def session(linked: tuple[Principal, Job] = Depends(linked_job)) -> SessionView:
        principal, job = linked
        status = await state_of(job)
        return SessionView(**status.model_dump(), checkin_id=job.job_id, script=scripts.for_clinic(principal.clinic_id),
                           max_bytes=policy.max_bytes, part_bytes=policy.part_bytes,
                           accepted_types=policy.accepted_types)

    @router.get(api_prefix + "/status", response_model=StatusView, tags=["patient check-in"])
    async def status(linked: tuple[Principal, Job] = Depends(linked_job)) -> StatusView:
        return await state_of(linked[1])

    @router.post(api_prefix + "/upload", response_model=UploadPlan, status_code=201, tags=["patient check-in"])
    async def start_upload(body: UploadStart,
                           linked: tuple[Principal, Job] = Depends(linked_job)) -> UploadPlan:
        who, job = linked
        await awaiting(job)
        try:
            content_type = policy.content_type(body.content_type)
            policy.plan(body.size)
        except UploadRefused as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        key = job.s3_key
        for stale in await store.open_uploads(key):  # one open upload per check-in, the newest
            await store.abort(key, stale)
        # The timeline is kept before any byte is sent: the analysis starts the moment S3 has the recording.
        if body.timeline is not None and not await jobs.record_timeline(job.job_id, body.timeline.stored()):
            raise HTTPException(status_code=409, detail="this check-in was already received; the link is used")
        await record(who, "checkin.upload_started", job, bytes=body.size, timeline_steps=len(body.timeline.entries)
                     if body.timeline is not None else 0)
        upload_id = await store.create(key, content_type)
        return await plan(job, upload_id, body.size, set(), content_type)

    @router.put(api_prefix + PART_PATH, response_model=PartReceived, tags=["patient check-in"],
                include_in_schema=proxied)
    async def send_part(request: Request, upload_id: str = Query(alias="uploadId", pattern=UPLOAD_ID),
                        number: int = Query(alias="partNumber", ge=1),
                        linked: tuple[Principal, Job] = Depends(linked_job)) -> PartReceived:
        """One part of the recording, written to S3 by this API (the body limit keeps it to one part)."""
        if not proxied:
            raise HTTPException(status_code=404, detail="parts go to the URLs the upload plan names")
        _, job = linked
        await awaiting(job)  # nothing is written for a check-in that has its recording
        if number > policy.max_parts:
            raise HTTPException(status_code=422, detail=f"partNumber: at most {policy.max_parts} parts")
        if upload_id not in await store.open_uploads(job.s3_key):  # S3 binds an upload id to its key; so do we
            raise HTTPException(status_code=410, detail="this upload can no longer be resumed")
        body = await request.body()  # at most one part: the route's body limit (body_limits)
        if not body:
            raise HTTPException(status_code=422, detail="the part is empty")
        try:
            stored = await store.upload_part(job.s3_key, upload_id, number, body)
        except UploadGone as error:
            raise HTTPException(status_code=410, detail="this upload can no longer be resumed") from error
        return PartReceived(number=stored.number, size=stored.size)

    @router.post(api_prefix + "/upload/resume", response_model=UploadPlan, tags=["patient check-in"])
    async def resume_upload(body: UploadContinue,
                            linked: tuple[Principal, Job] = Depends(linked_job)) -> UploadPlan:
        _, job = linked
        await awaiting(job)
        try:
            planned = {p.number: p.size for p in policy.plan(body.size)}
            stored = await store.list_parts(job.s3_key, body.upload_id)
        except UploadRefused as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        except UploadGone as error:
            raise HTTPException(status_code=410, detail="this upload can no longer be resumed") from error
        done = {p.number for p in stored if planned.get(p.number) == p.size}
        return await plan(job, body.upload_id, body.size, done)

    @router.post(api_prefix + "/upload/complete", response_model=StatusView, tags=["patient check-in"])
    async def complete_upload(body: UploadContinue,
                              linked: tuple[Principal, Job] = Depends(linked_job)) -> StatusView:
        who, job = linked
        key = job.s3_key
        try:
            parts = policy.check_complete(body.size, await store.list_parts(key, body.upload_id))
        except UploadRefused as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        except UploadGone as error:
            if await store.exists(key):  # completed already (a retried request): the same answer
                return await state_of(job)
            raise HTTPException(status_code=410, detail="this upload can no longer be resumed") from error
        await awaiting(job)  # the check-in takes one recording, however the link was used
        await record(who, "checkin.recording_received", job, bytes=body.size)
        try:
            await store.complete(key, body.upload_id, parts)
        except UploadGone as error:
            if await store.exists(key):
                return await state_of(job)
            raise HTTPException(status_code=410, detail="this upload can no longer be resumed") from error
        # S3 has the recording (its notification starts the analysis): the link's one recording is
        # handed over. Used up after, not before: a failure above leaves the patient a link to try again.
        if not who.credential_id or not await links.consume(who.credential_id):
            log.warning("a patient link's recording arrived after the link was used or expired", job_id=job.job_id)
        return await state_of(job)

    return router
