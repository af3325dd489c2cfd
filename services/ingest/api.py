"""The check-in HTTP API: clinic apps, EHRs and patients' one-time links come in here.

Every route but /health needs a credential (shared.identity.auth, checked before routing)
and names the roles that may call it (403 for any other); a job of another clinic
is 404 exactly like one that does not exist. Check-in creation is limited per
credential (429 with Retry-After) and audited (shared.identity.audit).

- `POST /api/v1/analyze` creates the job and says where to send its file. Upload
  mode "proxy" (`INGEST_UPLOAD_MODE`, the default; docs/uploads.md): a `PUT` of the
  file to `/api/v1/uploads/{job_id}` here, with the same credential, which this API
  streams to S3 itself; the storage endpoint is never handed out. Mode "presigned"
  (real S3): a presigned POST whose policy fixes the key, the content type and a
  size of 1 byte to `SCHIZODOT_MAX_UPLOAD_BYTES`, so S3 itself refuses an oversized
  or retyped file. Either way the job starts when the upload lands (S3 notification
  on the ingest queue).
- `PUT /api/v1/uploads/{job_id}` (mode "proxy"): the check-in's file, by its
  creator's clinic (an analyze check-in) or its patient link, only while the check-in
  waits for it (409 after: a recording, once in, is never overwritten), of the type the
  check-in declared (its first bytes must be that container), at most
  `SCHIZODOT_MAX_UPLOAD_BYTES` (413). While another upload of it is open in S3 and active within
  `INGEST_UPLOAD_STALE_SECONDS`: 409 with Retry-After; an open upload idle for longer is abandoned
  (its sender died) and this PUT aborts it and takes over.
- `POST /api/v1/patient-links` creates a check-in for a patient to record and a
  one-time link to it, to the patient page (`/checkin`, services/ingest/patient),
  whose API (`/api/v1/checkin/...`) uploads the recording in parts, resumably, and
  uses the link up when S3 has all of it. `POST /api/v1/patient-link/upload`,
  called with the link, is the same one recording in one request for apps that
  cannot send parts: in mode "proxy" a PUT here, which uses the link up once the
  recording is stored; in mode "presigned" a presigned POST, which uses it up at
  once (a conditional write).
- `POST /api/v1/events` takes an EHR's `checkin.submitted` CloudEvent for media
  under `incoming/<clinic>/`, checks that its clinic is the sender's and puts it
  on the ingest queue.
- `GET /api/v1/jobs/{job_id}`: status and progress, without the patient, and whether the check-in
  still waits for its recording (what a client reads after a 409 on its upload).

The routes are top-level functions; `create_app` composes them with the patient page and keeps
the API's state (`Ingest`) on `app.state`, which routes take with `Depends(ingest_of)`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import structlog
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Request, Response

from services.ingest.checkins import NewCheckin, create_checkin
from services.ingest.handlers import ehr_media_problem
from services.ingest.patient.uploads import MultipartStore, RecordingExists, UploadGone, UploadRefused, stream_to_s3
from services.ingest.schemas import (
    AnalyzeResponse,
    CheckinStatus,
    EventAccepted,
    LinkUploadRequest,
    PatientLinkRequest,
    PatientLinkResponse,
    RecordingReceived,
)
from services.ingest.settings import CheckinLimits, UploadPolicy
from shared.aws.jobs import JobStore
from shared.aws.storage import PresignedPost
from shared.domain.checkin import JOB_ID_PATTERN, CheckinRequest, accepted_content_type, job_id_for_event, new_job_id
from shared.domain.errors import InputError, MalformedMessage
from shared.domain.job import Job, JobStatus
from shared.domain.patients import PatientKey
from shared.identity.audit import AuditEvent, AuditTrail, install_audit_failure_handler
from shared.identity.auth import Authenticator
from shared.identity.credentials import PatientLinkStore
from shared.identity.middleware import OPEN_PATHS, allow, install_authentication, principal_dependency
from shared.identity.principal import Principal, Role
from shared.identity.ratelimit import RateLimiter
from shared.runtime.events import CHECKIN_SUBMITTED, CheckinSubmitted, decode_event, event_data
from shared.runtime.http import EVENT_BYTES, install_readable_validation_errors, install_request_body_limit
from shared.runtime.tracing import start_job_trace

# (key, content type, max bytes, expiry seconds) -> presigned POST
PostSigner = Callable[[str, str, int, int], Awaitable[PresignedPost]]
EventQueue = Callable[[str], Awaitable[str]]  # an event's JSON body -> the SQS message id

CREATES_CHECKINS = (Role.UPLOADER, Role.CLINIC_ADMIN, Role.EHR_INTEGRATION)
ISSUES_LINKS = (Role.UPLOADER, Role.CLINICIAN, Role.CLINIC_ADMIN)
READS_JOB_STATUS = (Role.UPLOADER, Role.CLINICIAN, Role.CLINIC_ADMIN, Role.EHR_INTEGRATION)
LINK_RECORDING = "checkin-recording"  # the file name of a check-in recorded through a patient link
RECORDINGS_PATH = "/api/v1/uploads/"  # + job id: upload mode "proxy"
log = structlog.get_logger()
JobId = Path(pattern=JOB_ID_PATTERN.pattern, description="e.g. job-abc123def456")


@dataclass
class IngestAccess:
    """Who may do what: the authenticator, the audit trail, the limiter and the links."""

    authenticator: Authenticator
    audit: AuditTrail
    limiter: RateLimiter
    links: PatientLinkStore
    limits: CheckinLimits


def _expires_at(seconds: int) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PatientPage:
    """The patient page and its API (services/ingest/patient), mounted beside this API."""

    router: APIRouter
    open_paths: tuple[str, ...]
    open_prefixes: tuple[str, ...]
    body_limits: dict[str, int] = field(default_factory=dict)  # its part route's: one part


@dataclass
class UploadProxy:
    """Upload mode "proxy": files come to this API, which writes them to S3 in parts of `part_bytes`.

    An open upload of the check-in that S3 has seen no part of for `stale_seconds` (INGEST_UPLOAD_STALE_SECONDS)
    is abandoned: its sender died (an ingest process killed mid-upload, an abort that failed) and a new PUT
    takes over. A livelier one answers a new PUT 409 with Retry-After."""

    store: MultipartStore
    part_bytes: int
    stale_seconds: float = 120.0


RETRY_AFTER_MAX_SECONDS = 30  # a client waiting on a live upload asks again this often at least, to see it finish
SENDING_ALREADY = ("a file for this check-in is being sent already; send it again after Retry-After: it is "
                   "accepted once that upload stops without storing the file or shows no progress for "
                   "INGEST_UPLOAD_STALE_SECONDS, and answered 'already received' if that upload stored it")
TAKEN_OVER = ("this upload was stopped: a newer request for the same check-in took it over after it showed no "
              "progress; that request's answer counts")


RecordingArrived = Callable[[str], Awaitable[bool]]  # S3 holds the object at this key


@dataclass(frozen=True)
class Ingest:
    """The API's state, built by `create_app` and kept on `app.state.ingest` for the routes."""

    uploads: UploadPolicy
    jobs: JobStore
    sign_upload: PostSigner
    access: IngestAccess
    principal: Callable[[Request], Awaitable[Principal]]  # shared.identity.middleware.principal_dependency
    enqueue_event: EventQueue | None = None
    recording_arrived: RecordingArrived | None = None
    proxy: UploadProxy | None = None

    async def limit_checkins(self, who: Principal) -> None:
        """Check-in creation per credential, across every API process (429 with Retry-After)."""
        limits = self.access.limits
        bucket = f"checkins:{who.credential.value}:{who.credential_id or who.subject}"
        verdict = await self.access.limiter.hit(bucket, limits.checkins_per_window, limits.window_seconds)
        if not verdict.allowed:
            raise HTTPException(status_code=429, headers={"Retry-After": str(verdict.retry_after)},
                                detail=f"too many check-ins: at most {limits.checkins_per_window} every "
                                       f"{limits.window_seconds} s per credential; try again later")

    async def upload_instructions(self, request: Request, job_id: str, key: str, content_type: str
                                  ) -> tuple[PresignedPost, str, int]:
        """(url and form fields, method, seconds valid): a PUT here (proxy) or a presigned POST to S3."""
        expires = self.uploads.upload_url_expiry_seconds
        if self.proxy is not None:  # valid while the check-in waits: the PUT checks that, not an expiry
            url = str(request.url_for("receive_recording", job_id=job_id))
            return PresignedPost(url=url, fields={}), "PUT", expires
        post = await self.sign_upload(key, content_type, self.uploads.max_upload_bytes, expires)
        return post, "POST", expires

    async def waiting_for_recording(self, job: Job) -> bool:
        arrived = self.recording_arrived
        return job.status == "queued" and not (arrived is not None and await arrived(job.s3_key))


def ingest_of(request: Request) -> Ingest:
    return request.app.state.ingest


async def caller(request: Request, ingest: Ingest = Depends(ingest_of)) -> Principal:
    """Who is calling (401 without a valid credential); `allow(caller, ...)` names the roles a route takes."""
    return await ingest.principal(request)


# In this order (the API's description lists the routes so); the recording route is described only in
# upload mode "proxy", where files come to it.
router = APIRouter()
recording_router = APIRouter()
event_router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.post("/api/v1/analyze", response_model=AnalyzeResponse, status_code=201, tags=["check-ins"])
async def analyze(
    request: CheckinRequest,
    http_request: Request,
    response: Response,
    who: Principal = Depends(allow(caller, *CREATES_CHECKINS)),
    idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=8, max_length=200),
    ingest: Ingest = Depends(ingest_of),
) -> AnalyzeResponse:
    """Create a check-in for a patient of the caller's clinic; upload the file with the presigned POST.

    With an Idempotency-Key, a client that retries after losing the answer gets the same job back
    (200); the key is scoped to the patient of the caller's clinic."""
    jobs = ingest.jobs
    await ingest.limit_checkins(who)
    stored = who.key_of(request.patient_id)
    assert who.clinic_id is not None  # key_of: roles that create check-ins belong to a clinic
    job_id = job_id_for_event(f"idempotency-key:{stored}", idempotency_key) if idempotency_key else new_job_id()
    with start_job_trace(job_id, http_request.headers) as job_trace:  # the job's trace starts here
        status = "queued"
        await ingest.access.audit.record(AuditEvent("checkin.create", who, patient_id=request.patient_id,
                                                    job_id=job_id))
        job, created = await create_checkin(NewCheckin(
            job_id, who.clinic_id, request.patient_id, request.filename, request.content_type, "api",
            metadata=request.metadata, options=request.options, timeline=request.timeline), jobs, job_trace)
        key = job.s3_key
        if not created:
            existing = await jobs.get(job_id)
            if existing is None or (existing.patient_id, existing.filename, existing.content_type) != (
                    stored, request.filename, request.content_type):
                raise HTTPException(status_code=409,
                                    detail="this Idempotency-Key was already used for another check-in")
            if not await ingest.waiting_for_recording(existing):
                # An upload form now could overwrite the recording its findings came from.
                raise HTTPException(status_code=409,
                                    detail="this check-in's recording was already received; no new upload "
                                           "form is given for it (use a new Idempotency-Key for a new check-in)")
            key, status = existing.s3_key, existing.status
            job_trace = {"trace_id": existing.pipeline.trace_id}
            response.status_code = 200
        post, method, expires = await ingest.upload_instructions(http_request, job_id, key, request.content_type)
    return AnalyzeResponse(
        job_id=job_id, status=status, s3_key=key, upload_url=post.url, upload_fields=post.fields,
        upload_method=method,
        max_bytes=ingest.uploads.max_upload_bytes, expires_in=expires, expires_at=_expires_at(expires),
        trace_id=job_trace.get("trace_id"),
    )


@router.post("/api/v1/patient-links", response_model=PatientLinkResponse, status_code=201, tags=["check-ins"])
async def issue_link(body: PatientLinkRequest, who: Principal = Depends(allow(caller, *ISSUES_LINKS)),
                     ingest: Ingest = Depends(ingest_of)) -> PatientLinkResponse:
    """A check-in for the patient to record, and a one-time link to it (its token is shown only here)."""
    limits = ingest.access.limits
    await ingest.limit_checkins(who)
    lifetime = min(body.expires_in or limits.patient_link_seconds, limits.patient_link_max_seconds)
    job_id = new_job_id()
    assert who.clinic_id is not None  # roles that issue links belong to a clinic
    await ingest.access.audit.record(AuditEvent("checkin.link_issued", who, patient_id=body.patient_id,
                                                job_id=job_id, detail={"expires_in": lifetime}))
    with start_job_trace(job_id, {}) as job_trace:
        await create_checkin(NewCheckin(job_id, who.clinic_id, body.patient_id, LINK_RECORDING, "video/webm",
                                        "patient_link", metadata=body.metadata, options=body.options),
                             ingest.jobs, job_trace)
    link, token = await ingest.access.links.issue(who.clinic_id, body.patient_id, job_id, who.subject, lifetime)
    return PatientLinkResponse(job_id=job_id, token=token, url=f"{limits.patient_page_url}#token={token}",
                               expires_at=_expires_at(lifetime))


def _declared_type(declared: str, status_code: int) -> str:
    """The media type a client declares, without parameters; `status_code` naming the accepted ones if not one."""
    try:
        return accepted_content_type(declared)
    except InputError as error:
        raise HTTPException(status_code=status_code, detail=f"content_type: {error}") from error


@router.post("/api/v1/patient-link/upload", response_model=AnalyzeResponse, status_code=201, tags=["check-ins"])
async def link_upload(body: LinkUploadRequest, request: Request,
                      who: Principal = Depends(allow(caller, Role.PATIENT_LINK)),
                      ingest: Ingest = Depends(ingest_of)) -> AnalyzeResponse:
    """The link's one upload: a PUT here that uses the link up once the recording is stored (proxy), or a
    presigned POST for its check-in that uses it up now (presigned; a second call is 401)."""
    jobs, links = ingest.jobs, ingest.access.links
    job = await jobs.get(who.job_id or "")
    if job is None or not who.owns(job.clinic_id) or job.patient_id != who.patient_key:
        raise HTTPException(status_code=404, detail="this link does not lead to a check-in")
    content_type = _declared_type(body.content_type, status_code=422)
    if not await ingest.waiting_for_recording(job):
        raise HTTPException(status_code=409, detail="this check-in was already received; the link is used")
    if body.timeline is not None and not await jobs.record_timeline(job.job_id, body.timeline.stored()):
        raise HTTPException(status_code=409, detail="this check-in was already received; the link is used")
    if ingest.proxy is None and (not who.credential_id or not await links.consume(who.credential_id)):
        raise HTTPException(status_code=401, detail="authentication required", headers={"WWW-Authenticate": "Bearer"})
    await ingest.access.audit.record(AuditEvent("checkin.upload_authorized", who, patient_id=who.patient_id,
                                                job_id=job.job_id))
    post, method, expires = await ingest.upload_instructions(request, job.job_id, job.s3_key, content_type)
    return AnalyzeResponse(job_id=job.job_id, status=job.status, s3_key=job.s3_key, upload_url=post.url,
                           upload_method=method, upload_fields=post.fields, max_bytes=ingest.uploads.max_upload_bytes,
                           expires_in=expires, expires_at=_expires_at(expires))


@recording_router.put(RECORDINGS_PATH + "{job_id}", response_model=RecordingReceived, status_code=201, tags=["check-ins"],
            name="receive_recording")
async def receive_recording(request: Request, job_id: str = JobId,
                            who: Principal = Depends(allow(caller, *CREATES_CHECKINS, Role.PATIENT_LINK)),
                            ingest: Ingest = Depends(ingest_of)) -> RecordingReceived:
    """The check-in's file as the request body (Content-Type: its type), streamed to S3 by this API."""
    proxy = ingest.proxy
    if proxy is None:
        raise HTTPException(status_code=404, detail="files go to the storage URL the check-in names")
    job = await ingest.jobs.get(job_id)
    linked = who.role == Role.PATIENT_LINK
    if job is None or not who.owns(job.clinic_id) or (
            (who.job_id != job.job_id or job.patient_id != who.patient_key) if linked
            else job.pipeline.source != "api"):
        raise HTTPException(status_code=404, detail=f"no check-in {job_id} waits for a file from this caller")
    if not await ingest.waiting_for_recording(job):
        raise HTTPException(status_code=409, detail=RECEIVED_ALREADY)
    content_type = _declared_type(request.headers.get("content-type", ""), status_code=415)
    if not linked and content_type != job.content_type:
        raise HTTPException(status_code=415, detail=f"Content-Type: this check-in was created for a "
                                                    f"{job.content_type} file, not {content_type}")
    await _take_over_abandoned_uploads(ingest, proxy, job, who)
    if not await ingest.waiting_for_recording(job):  # an abandoned upload may have completed before its abort
        raise HTTPException(status_code=409, detail=RECEIVED_ALREADY)
    try:
        size = await stream_to_s3(proxy.store, job.s3_key, content_type, request.stream(),
                                  part_bytes=proxy.part_bytes, max_bytes=ingest.uploads.max_upload_bytes)
    except UploadRefused as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    except RecordingExists as error:  # another request stored it first: S3 refused to replace it
        raise HTTPException(status_code=409, detail=RECEIVED_ALREADY) from error
    except UploadGone as error:  # aborted under this request by a newer one (_take_over_abandoned_uploads)
        log.warning("an upload taken over by a newer request stopped without storing anything", job_id=job.job_id)
        raise HTTPException(status_code=409, detail=TAKEN_OVER) from error
    await ingest.access.audit.record(AuditEvent("checkin.recording_received", who,
                                                patient_id=job.patient_id.patient, job_id=job.job_id,
                                                detail={"bytes": size}))
    if linked and (not who.credential_id or not await ingest.access.links.consume(who.credential_id)):
        log.warning("a patient link's recording arrived after the link was used or expired", job_id=job.job_id)
    return RecordingReceived(job_id=job.job_id, bytes=size)


RECEIVED_ALREADY = "this check-in's recording was already received; it is never replaced"


async def _take_over_abandoned_uploads(ingest: Ingest, proxy: UploadProxy, job: Job, who: Principal) -> None:
    """Abort the check-in's open uploads that S3 has seen no progress of for `proxy.stale_seconds`; 409 with
    Retry-After while one still moves. An aborted upload whose request is in fact alive fails at its next part
    or its completion (NoSuchUpload): it cannot store anything after this."""
    now = datetime.now(timezone.utc)
    uploads = await proxy.store.open_upload_activity(job.s3_key)
    live = [u.idle_seconds(now) for u in uploads if u.idle_seconds(now) < proxy.stale_seconds]
    if live:
        stale_in = proxy.stale_seconds - min(live)  # the soonest every live one could be taken over
        wait = min(max(1, math.ceil(stale_in)), RETRY_AFTER_MAX_SECONDS)
        raise HTTPException(status_code=409, detail=SENDING_ALREADY, headers={"Retry-After": str(wait)})
    for upload in uploads:
        idle = round(upload.idle_seconds(now))
        await ingest.access.audit.record(AuditEvent("checkin.upload_abandoned", who,
                                                    patient_id=job.patient_id.patient,
                                                    job_id=job.job_id, detail={"idle_seconds": idle}))
        await proxy.store.abort(job.s3_key, upload.upload_id)
        log.info("an abandoned upload was aborted; a new one takes over", job_id=job.job_id, idle_seconds=idle)


@event_router.post("/api/v1/events", response_model=EventAccepted, status_code=202, tags=["check-ins"])
async def submit_event(request: Request, who: Principal = Depends(allow(caller, Role.EHR_INTEGRATION)),
                       ingest: Ingest = Depends(ingest_of)) -> EventAccepted:
    """An EHR's `checkin.submitted` CloudEvent (structured JSON) for media already under
    `incoming/<clinic>/` of the media bucket; the clinic must be the credential's."""
    if ingest.enqueue_event is None:
        raise HTTPException(status_code=503, detail="events are not accepted by this deployment")
    body = await request.body()
    try:
        event = decode_event(json.loads(body))
        submitted = event_data(event, CheckinSubmitted, CHECKIN_SUBMITTED)
    except (ValueError, MalformedMessage) as error:
        raise HTTPException(status_code=422, detail=str(error)) from error
    if not who.owns(submitted.clinic_id):
        raise HTTPException(status_code=404, detail=f"no clinic {submitted.clinic_id}")
    problem = ehr_media_problem(submitted)
    if problem:
        raise HTTPException(status_code=422, detail=problem)
    await ingest.limit_checkins(who)
    job_id = job_id_for_event(event.get_source(), event.get_id(), submitted.clinic_id)
    existing = await ingest.jobs.get(job_id)
    if existing is not None and (existing.clinic_id, existing.patient_id) != (
            submitted.clinic_id, PatientKey.of(submitted.clinic_id, submitted.patient_id)):
        # A collision (or a reused event id for another patient): refused, never merged.
        raise HTTPException(status_code=409, detail="this event's id was already used for another check-in; "
                                                    "send it with a new id")
    await ingest.access.audit.record(AuditEvent("checkin.event_submitted", who, patient_id=submitted.patient_id,
                                                job_id=job_id))
    message_id = await ingest.enqueue_event(body.decode())
    return EventAccepted(job_id=job_id, message_id=message_id)


@event_router.get("/api/v1/jobs/{job_id}", response_model=CheckinStatus, tags=["check-ins"])
async def job_status(job_id: str = JobId, who: Principal = Depends(allow(caller, *READS_JOB_STATUS)),
                     ingest: Ingest = Depends(ingest_of)) -> CheckinStatus:
    """Status and progress. No patient id and no findings: those are the results API's. `awaiting_recording`
    says whether an upload is still accepted: a client whose upload got 409 reads it to know whether an
    earlier try stored the file."""
    job = await ingest.jobs.get(job_id)
    if job is None or not who.owns(job.clinic_id):
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return CheckinStatus(**JobStatus.of(job, with_patient=False).model_dump(),
                         awaiting_recording=await ingest.waiting_for_recording(job))


def create_app(uploads: UploadPolicy, jobs: JobStore, sign_upload: PostSigner, access: IngestAccess,
               enqueue_event: EventQueue | None = None, patient_page: PatientPage | None = None,
               recording_arrived: RecordingArrived | None = None, proxy: UploadProxy | None = None) -> FastAPI:
    app = FastAPI(title="SchizoDot ingest API", version="1",
                  description="Check-ins. Send a bearer token (`Authorization: Bearer …`), an API key "
                              "(`X-API-Key`) or, for a patient, the one-time link's token. The patient page is "
                              "at /checkin.")
    if patient_page is not None:
        install_authentication(app, access.authenticator, open_paths=OPEN_PATHS | set(patient_page.open_paths),
                               open_prefixes=patient_page.open_prefixes)
        app.include_router(patient_page.router)
    else:
        install_authentication(app, access.authenticator)
    install_readable_validation_errors(app)
    install_audit_failure_handler(app)
    # forms and JSON: small; an EHR's event: larger; a recording: the upload limit, one part of it on the page
    install_request_body_limit(app, limits={"/api/v1/events": EVENT_BYTES, RECORDINGS_PATH: uploads.max_upload_bytes,
                                            **(patient_page.body_limits if patient_page else {})})
    app.state.ingest = Ingest(uploads, jobs, sign_upload, access, principal_dependency(access.authenticator),
                              enqueue_event, recording_arrived, proxy)
    app.include_router(router)
    app.include_router(recording_router, include_in_schema=proxy is not None)  # presigned: a 404 here
    app.include_router(event_router)
    return app
