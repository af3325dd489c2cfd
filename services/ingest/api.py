"""The check-in HTTP API: clinic apps, EHRs and patients' one-time links come in here.

Every route but /health needs a credential (shared.auth, checked before routing)
and names the roles that may call it (403 for any other); a job of another clinic
is 404 exactly like one that does not exist. Check-in creation is limited per
credential (429 with Retry-After) and audited (shared.audit).

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
  `SCHIZODOT_MAX_UPLOAD_BYTES` (413).
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
- `GET /api/v1/jobs/{job_id}`: status and progress, without the patient.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Path, Request, Response
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.ingest.checkins import NewCheckin, create_checkin
from services.ingest.handlers import ehr_media_problem
from services.ingest.settings import CheckinLimits, UploadPolicy
from shared.audit import AuditEvent, AuditTrail, install_audit_failure_handler
from shared.auth import (
    OPEN_PATHS,
    Authenticator,
    PatientLinkStore,
    allow,
    install_authentication,
    principal_dependency,
)
from shared.domain import (
    JOB_ID_PATTERN,
    CheckinRequest,
    Metadata,
    PatientId,
    job_id_for_event,
    new_job_id,
)
from shared.errors import MalformedMessage
from shared.events import CHECKIN_SUBMITTED, CheckinSubmitted, decode_event, describe_validation_error, event_data
from services.ingest.patient.uploads import MultipartStore, UploadRefused, stream_to_s3
from shared.http import EVENT_BYTES, install_readable_validation_errors, install_request_body_limit
from shared.identity import Principal, Role, local_patient_id, patient_key
from shared.job import Job, JobStatus
from shared.jobs import JobStore
from shared.options import CheckinOptions
from shared.ratelimit import RateLimiter
from shared.storage import PresignedPost
from shared.timeline import TimelineField
from shared.tracing import start_job_trace

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


class AnalyzeResponse(BaseModel):
    job_id: str
    status: str
    s3_key: str
    upload_url: str
    upload_method: str = Field("POST", description="PUT: send the file as the body, with its Content-Type and "
                               "this API's credential; POST: a multipart/form-data form, the fields then the file")
    upload_fields: dict[str, str] = Field(description="form fields to send before the file (POST only)")
    max_bytes: int
    expires_in: int
    expires_at: str
    trace_id: str | None = None  # find the job's trace in Jaeger by it


class PatientLinkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patient_id: PatientId
    metadata: Metadata = Field(default_factory=dict)
    options: CheckinOptions = Field(default_factory=CheckinOptions,
                                    description="analyses and thresholds for the check-in (shared.options)")
    expires_in: int | None = Field(None, ge=60, description="seconds; at most INGEST_PATIENT_LINK_MAX_SECONDS")


class PatientLinkResponse(BaseModel):
    job_id: str
    token: str = Field(description="shown once; the link's only copy")
    url: str = Field(description="the patient page, with the token in the fragment (never sent to a server)")
    expires_at: str


class LinkUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    content_type: str = Field(min_length=1, max_length=200)
    timeline: TimelineField | None = Field(None, description="when each prompt and dosing step was shown "
                                           "(shared.timeline)")


class RecordingReceived(BaseModel):
    job_id: str
    status: str = "received"
    bytes: int


class EventAccepted(BaseModel):
    job_id: str
    message_id: str


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
    """Upload mode "proxy": files come to this API, which writes them to S3 in parts of `part_bytes`."""

    store: MultipartStore
    part_bytes: int


RecordingArrived = Callable[[str], Awaitable[bool]]  # S3 holds the object at this key


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
    principal = principal_dependency(access.authenticator)
    audit, limits = access.audit, access.limits

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    async def limit_checkins(who: Principal) -> None:
        """Check-in creation per credential, across every API process (429 with Retry-After)."""
        bucket = f"checkins:{who.credential.value}:{who.credential_id or who.subject}"
        verdict = await access.limiter.hit(bucket, limits.checkins_per_window, limits.window_seconds)
        if not verdict.allowed:
            raise HTTPException(status_code=429, headers={"Retry-After": str(verdict.retry_after)},
                                detail=f"too many check-ins: at most {limits.checkins_per_window} every "
                                       f"{limits.window_seconds} s per credential; try again later")

    async def signed_post(key: str, content_type: str) -> tuple[PresignedPost, int]:
        expires = uploads.upload_url_expiry_seconds
        return await sign_upload(key, content_type, uploads.max_upload_bytes, expires), expires

    async def upload_instructions(request: Request, job_id: str, key: str, content_type: str
                                  ) -> tuple[PresignedPost, str, int]:
        """(url and form fields, method, seconds valid): a PUT here (proxy) or a presigned POST to S3."""
        if proxy is not None:  # valid while the check-in waits: the PUT checks that, not an expiry
            url = str(request.url_for("receive_recording", job_id=job_id))
            return PresignedPost(url=url, fields={}), "PUT", uploads.upload_url_expiry_seconds
        post, expires = await signed_post(key, content_type)
        return post, "POST", expires

    async def waiting_for_recording(job: Job) -> bool:
        return job.status == "queued" and not (recording_arrived is not None and await recording_arrived(job.s3_key))

    @app.post("/api/v1/analyze", response_model=AnalyzeResponse, status_code=201, tags=["check-ins"])
    async def analyze(
        request: CheckinRequest,
        http_request: Request,
        response: Response,
        who: Principal = Depends(allow(principal, *CREATES_CHECKINS)),
        idempotency_key: str | None = Header(None, alias="Idempotency-Key", min_length=8, max_length=200),
    ) -> AnalyzeResponse:
        """Create a check-in for a patient of the caller's clinic; upload the file with the presigned POST.

        With an Idempotency-Key, a client that retries after losing the answer gets the same job back
        (200); the key is scoped to the patient of the caller's clinic."""
        await limit_checkins(who)
        stored = who.key_of(request.patient_id)
        assert who.clinic_id is not None  # key_of: roles that create check-ins belong to a clinic
        job_id = job_id_for_event(f"idempotency-key:{stored}", idempotency_key) if idempotency_key else new_job_id()
        with start_job_trace(job_id, http_request.headers) as job_trace:  # the job's trace starts here
            status = "queued"
            await audit.record(AuditEvent("checkin.create", who, patient_id=request.patient_id, job_id=job_id))
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
                if not await waiting_for_recording(existing):
                    # An upload form now could overwrite the recording its findings came from.
                    raise HTTPException(status_code=409,
                                        detail="this check-in's recording was already received; no new upload "
                                               "form is given for it (use a new Idempotency-Key for a new check-in)")
                key, status = existing.s3_key, existing.status
                job_trace = {"trace_id": existing.pipeline.trace_id}
                response.status_code = 200
            post, method, expires = await upload_instructions(http_request, job_id, key, request.content_type)
        return AnalyzeResponse(
            job_id=job_id, status=status, s3_key=key, upload_url=post.url, upload_fields=post.fields,
            upload_method=method,
            max_bytes=uploads.max_upload_bytes, expires_in=expires, expires_at=_expires_at(expires),
            trace_id=job_trace.get("trace_id"),
        )

    @app.post("/api/v1/patient-links", response_model=PatientLinkResponse, status_code=201, tags=["check-ins"])
    async def issue_link(body: PatientLinkRequest, who: Principal = Depends(allow(principal, *ISSUES_LINKS))
                         ) -> PatientLinkResponse:
        """A check-in for the patient to record, and a one-time link to it (its token is shown only here)."""
        await limit_checkins(who)
        lifetime = min(body.expires_in or limits.patient_link_seconds, limits.patient_link_max_seconds)
        job_id = new_job_id()
        assert who.clinic_id is not None  # roles that issue links belong to a clinic
        await audit.record(AuditEvent("checkin.link_issued", who, patient_id=body.patient_id, job_id=job_id,
                                      detail={"expires_in": lifetime}))
        with start_job_trace(job_id, {}) as job_trace:
            await create_checkin(NewCheckin(job_id, who.clinic_id, body.patient_id, LINK_RECORDING, "video/webm",
                                            "patient_link", metadata=body.metadata, options=body.options),
                                 jobs, job_trace)
        link, token = await access.links.issue(who.clinic_id, body.patient_id, job_id, who.subject, lifetime)
        return PatientLinkResponse(job_id=job_id, token=token, url=f"{limits.patient_page_url}#token={token}",
                                   expires_at=_expires_at(lifetime))

    @app.post("/api/v1/patient-link/upload", response_model=AnalyzeResponse, status_code=201, tags=["check-ins"])
    async def link_upload(body: LinkUploadRequest, request: Request,
                          who: Principal = Depends(allow(principal, Role.PATIENT_LINK))) -> AnalyzeResponse:
        """The link's one upload: a PUT here that uses the link up once the recording is stored (proxy), or a
        presigned POST for its check-in that uses it up now (presigned; a second call is 401)."""
        job = await jobs.get(who.job_id or "")
        if job is None or not who.owns(job.clinic_id) or job.patient_id != who.patient_key:
            raise HTTPException(status_code=404, detail="this link does not lead to a check-in")
        try:
            content_type = CheckinRequest(patient_id=who.patient_id or "xxx", filename="x",
                                          content_type=body.content_type).content_type
        except ValidationError as error:
            raise HTTPException(status_code=422, detail=describe_validation_error(error)) from error
        if not await waiting_for_recording(job):
            raise HTTPException(status_code=409, detail="this check-in was already received; the link is used")
        if body.timeline is not None and not await jobs.record_timeline(job.job_id, body.timeline.stored()):
            raise HTTPException(status_code=409, detail="this check-in was already received; the link is used")
        if proxy is None and (not who.credential_id or not await access.links.consume(who.credential_id)):
            raise HTTPException(status_code=401, detail="authentication required", headers={"WWW-Authenticate": "Bearer"})
        await audit.record(AuditEvent("checkin.upload_authorized", who, patient_id=who.patient_id, job_id=job.job_id))
        post, method, expires = await upload_instructions(request, job.job_id, job.s3_key, content_type)
        return AnalyzeResponse(job_id=job.job_id, status=job.status, s3_key=job.s3_key, upload_url=post.url,
                               upload_method=method, upload_fields=post.fields, max_bytes=uploads.max_upload_bytes,
                               expires_in=expires, expires_at=_expires_at(expires))

    @app.put(RECORDINGS_PATH + "{job_id}", response_model=RecordingReceived, status_code=201, tags=["check-ins"],
             name="receive_recording", include_in_schema=proxy is not None)
    async def receive_recording(request: Request, job_id: str = JobId,
                                who: Principal = Depends(allow(principal, *CREATES_CHECKINS, Role.PATIENT_LINK))
                                ) -> RecordingReceived:
        """The check-in's file as the request body (Content-Type: its type), streamed to S3 by this API."""
        if proxy is None:
            raise HTTPException(status_code=404, detail="files go to the storage URL the check-in names")
        job = await jobs.get(job_id)
        linked = who.role == Role.PATIENT_LINK
        if job is None or not who.owns(job.clinic_id) or (
                (who.job_id != job.job_id or job.patient_id != who.patient_key) if linked
                else job.pipeline.source != "api"):
            raise HTTPException(status_code=404, detail=f"no check-in {job_id} waits for a file from this caller")
        if not await waiting_for_recording(job):
            raise HTTPException(status_code=409, detail="this check-in's recording was already received; "
                                                        "it is never replaced")
        declared = request.headers.get("content-type", "")
        try:
            content_type = CheckinRequest(patient_id="xxx", filename="x", content_type=declared).content_type
        except ValidationError as error:
            raise HTTPException(status_code=415, detail=describe_validation_error(error)) from error
        if not linked and content_type != job.content_type:
            raise HTTPException(status_code=415, detail=f"Content-Type: this check-in was created for a "
                                                        f"{job.content_type} file, not {content_type}")
        if await proxy.store.open_uploads(job.s3_key):
            raise HTTPException(status_code=409, detail="a file for this check-in is being sent already")
        try:
            size = await stream_to_s3(proxy.store, job.s3_key, content_type, request.stream(),
                                      part_bytes=proxy.part_bytes, max_bytes=uploads.max_upload_bytes)
        except UploadRefused as error:
            raise HTTPException(status_code=422, detail=str(error)) from error
        await audit.record(AuditEvent("checkin.recording_received", who, patient_id=local_patient_id(job.patient_id),
                                      job_id=job.job_id, detail={"bytes": size}))
        if linked and (not who.credential_id or not await access.links.consume(who.credential_id)):
            log.warning("a patient link's recording arrived after the link was used or expired", job_id=job.job_id)
        return RecordingReceived(job_id=job.job_id, bytes=size)

    @app.post("/api/v1/events", response_model=EventAccepted, status_code=202, tags=["check-ins"])
    async def submit_event(request: Request, who: Principal = Depends(allow(principal, Role.EHR_INTEGRATION))
                           ) -> EventAccepted:
        """An EHR's `checkin.submitted` CloudEvent (structured JSON) for media already under
        `incoming/<clinic>/` of the media bucket; the clinic must be the credential's."""
        if enqueue_event is None:
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
        await limit_checkins(who)
        job_id = job_id_for_event(event.get_source(), event.get_id(), submitted.clinic_id)
        existing = await jobs.get(job_id)
        if existing is not None and (existing.clinic_id, existing.patient_id) != (
                submitted.clinic_id, patient_key(submitted.clinic_id, submitted.patient_id)):
            # A collision (or a reused event id for another patient): refused, never merged.
            raise HTTPException(status_code=409, detail="this event's id was already used for another check-in; "
                                                        "send it with a new id")
        await audit.record(AuditEvent("checkin.event_submitted", who, patient_id=submitted.patient_id, job_id=job_id))
        message_id = await enqueue_event(body.decode())
        return EventAccepted(job_id=job_id, message_id=message_id)

    @app.get("/api/v1/jobs/{job_id}", response_model=JobStatus, tags=["check-ins"])
    async def job_status(job_id: str = JobId, who: Principal = Depends(allow(principal, *READS_JOB_STATUS))
                         ) -> JobStatus:
        """Status and progress. No patient id and no findings: those are the results API's."""
        job = await jobs.get(job_id)
        if job is None or not who.owns(job.clinic_id):
            raise HTTPException(status_code=404, detail=f"no job {job_id}")
        return JobStatus.of(job, with_patient=False)

    return app
