"""The patient check-in page and its upload API, as a router the ingest service mounts.

The page (`GET {page_path}`) is static and holds no PHI: the one-time link
carries its token in the URL fragment (`/checkin#token=...`), which browsers
never send to a server or put in a Referer. The page's script sends it as a
bearer token to the API below, where shared.identity.auth turns it into a patient-link
`Principal` bound to one clinic, one patient and one check-in. Every API route:

- 403 for a principal that is not a patient link (the one 403, `shared.identity.middleware.allow`);
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

The routes are top-level functions; `create_patient_router` only composes them and binds
the API's state (`PatientCheckin`) to each request, which routes take with `Depends(checkin_of)`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import structlog
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from services.ingest.patient.schemas import (
    UPLOAD_ID,
    PartReceived,
    SessionView,
    SignedPart,
    StatusView,
    UploadContinue,
    UploadPlan,
    UploadStart,
)
from services.ingest.patient.script import ScriptCatalog
from services.ingest.patient.uploads import MultipartPolicy, MultipartStore, UploadGone, UploadMode, UploadRefused
from shared.domain.job import COMPLETED, FAILED, PROCESSING, Job
from shared.identity.audit import AuditEvent, AuditTrail
from shared.identity.credentials import PatientLinkStore
from shared.identity.middleware import allow
from shared.identity.principal import Principal, Role

log = structlog.get_logger()

HERE = Path(__file__).resolve().parent
STATIC_FILES = {"checkin.js": "text/javascript; charset=utf-8", "checkin.css": "text/css; charset=utf-8"}
NOT_FOUND = "this check-in link does not lead to a check-in"


class CheckinJobs(Protocol):
    """Reads SchizodotJobs and keeps a recording's timeline (shared.aws.jobs.JobStore)."""

    async def get(self, job_id: str) -> Job | None: ...

    async def record_timeline(self, job_id: str, timeline: list[dict[str, Any]]) -> bool: ...


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
    """The request-body limit of the part route (shared.runtime.http.install_request_body_limit): one part."""
    return {api_prefix + PART_PATH: policy.part_bytes}


PART_PATH = "/upload/part"
TAGS: list[str | Any] = ["patient check-in"]
USED = "this check-in was already received; the link is used"
GONE = "this upload can no longer be resumed"


@dataclass(frozen=True)
class PatientCheckin:
    """The check-in API's state, built by `create_patient_router` and bound to each request."""

    principal: Callable[[Request], Awaitable[Principal]]  # shared.identity.middleware.principal_dependency
    jobs: CheckinJobs
    store: MultipartStore
    scripts: ScriptCatalog
    policy: MultipartPolicy
    links: PatientLinkStore
    audit: AuditTrail
    proxied: bool  # parts go through this API (upload mode "proxy")
    api_prefix: str
    page: str  # the rendered page
    headers: dict[str, str]  # the page's

    async def state_of(self, job: Job) -> StatusView:
        if job.status == PROCESSING:
            return StatusView(state="analysing", progress=min(job.progress, 99))
        if job.status == COMPLETED:
            return StatusView(state="done", progress=100)
        arrived = await self.store.exists(job.s3_key)
        if job.status == FAILED:
            return StatusView(state="not_analysed" if arrived else "closed")
        return StatusView(state="received" if arrived else "awaiting_recording")

    async def awaiting(self, job: Job) -> None:
        if (await self.state_of(job)).state != "awaiting_recording":
            raise HTTPException(status_code=409, detail=USED)

    async def record(self, who: Principal, action: str, job: Job, **detail: Any) -> None:
        await self.audit.record(AuditEvent(action, who, patient_id=who.patient_id, job_id=job.job_id, detail=detail))

    async def plan(self, job: Job, upload_id: str, size: int, done: set[int],
                   content_type: str | None = None) -> UploadPlan:
        """The parts still to send, with the URLs to send them to (this API's, or presigned S3 ones)."""
        policy = self.policy
        result = UploadPlan(upload_id=upload_id, size=size, part_bytes=policy.part_bytes, content_type=content_type,
                            done=sorted(done), expires_in=policy.url_expiry_seconds, parts=[],
                            send_token=self.proxied)
        for part in policy.plan(size):
            if part.number not in done:
                if self.proxied:
                    url = (f"{self.api_prefix}{PART_PATH}?uploadId={quote(upload_id, safe='')}"
                           f"&partNumber={part.number}")
                else:
                    url = await self.store.presign_part(job.s3_key, upload_id, part.number, part.size,
                                                        policy.url_expiry_seconds)
                result.parts.append(SignedPart(number=part.number, size=part.size, url=url))
        return result


def checkin_of(request: Request) -> PatientCheckin:
    """The check-in API serving this request (bound by `create_patient_router`'s router)."""
    return request.state.patient_checkin


async def caller(request: Request, checkin: PatientCheckin = Depends(checkin_of)) -> Principal:
    """Who is calling (401 for a missing, expired or used link)."""
    return await checkin.principal(request)


async def linked_job(who: Principal = Depends(allow(caller, Role.PATIENT_LINK)),
                     checkin: PatientCheckin = Depends(checkin_of)) -> tuple[Principal, Job]:
    """The patient link calling and its check-in: the one 403 for other roles (`allow`), 404 for a check-in
    that is missing, another patient's or another clinic's."""
    job = await checkin.jobs.get(who.job_id) if who.job_id else None
    if job is None or job.patient_id != who.patient_key or not who.owns(job.clinic_id):
        raise HTTPException(status_code=404, detail=NOT_FOUND)
    return who, job


page_router = APIRouter(include_in_schema=False)  # under the page's path
# Under the API's prefix, in this order (the API's description lists them so); the part route is
# described only when parts come through this API.
api_router = APIRouter(tags=TAGS)
part_router = APIRouter(tags=TAGS)
finish_router = APIRouter(tags=TAGS)


@page_router.get("", response_class=HTMLResponse)
async def checkin_page(checkin: PatientCheckin = Depends(checkin_of)) -> HTMLResponse:
    return HTMLResponse(checkin.page, headers=checkin.headers)


@page_router.get("/static/{name}")
async def checkin_static(name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(status_code=404, detail="not found")
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC_FILES[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@api_router.get("/session", response_model=SessionView)
async def session(linked: tuple[Principal, Job] = Depends(linked_job),
                  checkin: PatientCheckin = Depends(checkin_of)) -> SessionView:
    principal, job = linked
    status = await checkin.state_of(job)
    policy = checkin.policy
    return SessionView(**status.model_dump(), checkin_id=job.job_id,
                       script=checkin.scripts.for_clinic(principal.clinic_id), max_bytes=policy.max_bytes,
                       part_bytes=policy.part_bytes, accepted_types=policy.accepted_types)


@api_router.get("/status", response_model=StatusView)
async def status(linked: tuple[Principal, Job] = Depends(linked_job),
                 checkin: PatientCheckin = Depends(checkin_of)) -> StatusView:
    return await checkin.state_of(linked[1])


@api_router.post("/upload", response_model=UploadPlan, status_code=201)
async def start_upload(body: UploadStart, linked: tuple[Principal, Job] = Depends(linked_job),
                       checkin: PatientCheckin = Depends(checkin_of)) -> UploadPlan:
    who, job = linked
    store = checkin.store
    await checkin.awaiting(job)
    try:
        content_type = checkin.policy.content_type(body.content_type)
        checkin.policy.plan(body.size)
    except UploadRefused as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    key = job.s3_key
    for stale in await store.open_uploads(key):  # one open upload per check-in, the newest
        await store.abort(key, stale)
    # The timeline is kept before any byte is sent: the analysis starts the moment S3 has the recording.
    if body.timeline is not None and not await checkin.jobs.record_timeline(job.job_id, body.timeline.stored()):
        raise HTTPException(status_code=409, detail=USED)
    await checkin.record(who, "checkin.upload_started", job, bytes=body.size,
                         timeline_steps=len(body.timeline.entries) if body.timeline is not None else 0)
    upload_id = await store.create(key, content_type)
    return await checkin.plan(job, upload_id, body.size, set(), content_type)


@part_router.put(PART_PATH, response_model=PartReceived)
async def send_part(request: Request, upload_id: str = Query(alias="uploadId", pattern=UPLOAD_ID),
                    number: int = Query(alias="partNumber", ge=1),
                    linked: tuple[Principal, Job] = Depends(linked_job),
                    checkin: PatientCheckin = Depends(checkin_of)) -> PartReceived:
    """One part of the recording, written to S3 by this API (the body limit keeps it to one part)."""
    if not checkin.proxied:
        raise HTTPException(status_code=404, detail="parts go to the URLs the upload plan names")
    _, job = linked
    store, policy = checkin.store, checkin.policy
    await checkin.awaiting(job)  # nothing is written for a check-in that has its recording
    if number > policy.max_parts:
        raise HTTPException(status_code=422, detail=f"partNumber: at most {policy.max_parts} parts")
    if upload_id not in await store.open_uploads(job.s3_key):  # S3 binds an upload id to its key; so do we
        raise HTTPException(status_code=410, detail=GONE)
    body = await request.body()  # at most one part: the route's body limit (body_limits)
    if not body:
        raise HTTPException(status_code=422, detail="the part is empty")
    try:
        stored = await store.upload_part(job.s3_key, upload_id, number, body)
    except UploadGone as error:
        raise HTTPException(status_code=410, detail=GONE) from error
    return PartReceived(number=stored.number, size=stored.size)


@finish_router.post("/upload/resume", response_model=UploadPlan)
async def resume_upload(body: UploadContinue, linked: tuple[Principal, Job] = Depends(linked_job),
                        checkin: PatientCheckin = Depends(checkin_of)) -> UploadPlan:
    _, job = linked
    await checkin.awaiting(job)
    try:
        planned = {p.number: p.size for p in checkin.policy.plan(body.size)}
        stored = await checkin.store.list_parts(job.s3_key, body.upload_id)
    except UploadRefused as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    except UploadGone as error:
        raise HTTPException(status_code=410, detail=GONE) from error
    done = {p.number for p in stored if planned.get(p.number) == p.size}
    return await checkin.plan(job, body.upload_id, body.size, done)


@finish_router.post("/upload/complete", response_model=StatusView)
async def complete_upload(body: UploadContinue, linked: tuple[Principal, Job] = Depends(linked_job),
                          checkin: PatientCheckin = Depends(checkin_of)) -> StatusView:
    who, job = linked
    store, key = checkin.store, job.s3_key
    try:
        parts = checkin.policy.check_complete(body.size, await store.list_parts(key, body.upload_id))
    except UploadRefused as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    except UploadGone as error:
        if await store.exists(key):  # completed already (a retried request): the same answer
            return await checkin.state_of(job)
        raise HTTPException(status_code=410, detail=GONE) from error
    await checkin.awaiting(job)  # the check-in takes one recording, however the link was used
    await checkin.record(who, "checkin.recording_received", job, bytes=body.size)
    try:
        await store.complete(key, body.upload_id, parts)
    except UploadGone as error:
        if await store.exists(key):
            return await checkin.state_of(job)
        raise HTTPException(status_code=410, detail=GONE) from error
    # S3 has the recording (its notification starts the analysis): the link's one recording is
    # handed over. Used up after, not before: a failure above leaves the patient a link to try again.
    if not who.credential_id or not await checkin.links.consume(who.credential_id):
        log.warning("a patient link's recording arrived after the link was used or expired", job_id=job.job_id)
    return await checkin.state_of(job)




def create_patient_router(
    *,
    principal: Callable[[Request], Awaitable[Principal]],
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

    `principal`: shared.identity.auth's dependency returning the caller's `Principal`
    (401 for a missing, expired or used link). `upload_mode`: parts through this
    API ("proxy") or to presigned S3 URLs ("presigned"), whose endpoint
    `upload_origin` (scheme://host[:port]) the page's Content-Security-Policy
    then names.
    """
    if upload_mode == "presigned" and not upload_origin:
        raise ValueError("presigned uploads need the S3 endpoint's origin for the page's policy")
    templates = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape())
    checkin = PatientCheckin(
        principal=principal, jobs=jobs, store=store, scripts=scripts, policy=policy, links=links, audit=audit,
        proxied=upload_mode == "proxy", api_prefix=api_prefix,
        page=templates.get_template("checkin.html").render(api_prefix=api_prefix, static_prefix=f"{page_path}/static"),
        headers=_page_headers(upload_origin if upload_mode == "presigned" else None))

    async def bind(request: Request) -> None:  # runs before each route's own dependencies (checkin_of)
        request.state.patient_checkin = checkin

    router = APIRouter(dependencies=[Depends(bind)])
    router.include_router(page_router, prefix=page_path)
    router.include_router(api_router, prefix=api_prefix)
    # Parts to S3's URLs ("presigned"): the part route (a 404) is no part of the API's description.
    router.include_router(part_router, prefix=api_prefix, include_in_schema=checkin.proxied)
    router.include_router(finish_router, prefix=api_prefix)
    return router
