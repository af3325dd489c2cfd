"""The audit trail: one record per read or write of protected health information.

Who (subject, role, clinic, credential), what (action, outcome), about whom (the
patient's pseudonym, the job), when, and the request and trace ids. Records are
written before PHI is served: a record that cannot be written fails the request
(`AuditUnavailable`, a 503), so nothing is ever served unaudited.

**Where: an S3 bucket with Object Lock in compliance mode.** Each record is one
object, `audit/<clinic>/<time>_<patient-ref>_<id>.json`, in `SCHIZODOT_AUDIT_BUCKET`,
retained for `SCHIZODOT_AUDIT_RETENTION_DAYS` (six years by default). Why not a
DynamoDB table with only PutItem allowed: a PutItem on an existing key *replaces*
the item, and IAM cannot require the condition that would stop it, so a role that
may add records could also rewrite them. Under Object Lock nobody, the root user
included, can delete or shorten the retention of a version; writing the same key
again only adds a version, and the reader always takes a key's *first* version (and
flags keys that have more). A delete without a version id is still allowed and adds a
delete marker, which hides the key from a plain listing: the reader lists versions and
flags such a record `deleted`. The services' roles may only PutObject under `audit/`
(deploy/iam); only the results role, which serves `GET /api/v1/audit`, may list and
read. Keys sort by clinic and time, so "since" is a listing start and pages are
listing continuations; the patient filter reads the pseudonym in the key name.

Patient ids never appear: a record holds `patient_ref`, an HMAC of the clinic's
patient key under `SCHIZODOT_PSEUDONYM_KEY` (the same reference as in the logs),
which survives the patient's erasure so the trail still shows it.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

import structlog
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict

from shared.domain.patients import ClinicPatientId, PatientKey
from shared.identity.principal import Principal

log = structlog.get_logger()

# The request being served, for audit records written anywhere below the route.
request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("schizodot_request_id", default=None)

AUDIT_PREFIX = "audit/"
NO_PATIENT = "-"


class AuditUnavailable(Exception):
    """The record could not be written: the request must fail."""


def patient_ref(pseudonym_key: str, stored_patient_key: PatientKey | str) -> str:
    """The pseudonym of a clinic's patient (`shared.runtime.logs` uses the same under the same key), always of
    the stored key: a clinic-local id (`ClinicPatientId`) is a TypeError, not another patient's pseudonym."""
    stored = PatientKey.parse(stored_patient_key)
    digest = hmac.new(pseudonym_key.encode(), stored.encode(), hashlib.sha256).hexdigest()
    return f"pt-{digest[:16]}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class AuditRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    record_id: str
    at: str  # ISO 8601, UTC, microseconds
    service: str
    action: str  # e.g. results.read, checkin.create, erasure.completed, ehr.results_sent
    outcome: str  # success | not_found | failed
    actor: str  # the token's sub, the API key's name, the link's id, or the service
    role: str
    clinic_id: str | None
    credential: str  # bearer | api_key | patient_link | service
    patient_ref: str | None = None
    job_id: str | None = None
    request_id: str | None = None
    trace_id: str | None = None
    detail: dict[str, Any] = {}  # counts, filters: never PHI

    def key(self) -> str:
        return f"{AUDIT_PREFIX}{self.clinic_id or '_'}/{self.at}_{self.patient_ref or NO_PATIENT}_{self.record_id}.json"


@dataclass(frozen=True)
class AuditEvent:
    """What a route reports; the trail adds who, when and the request's ids.
    `patient_id` is clinic-local (the principal's clinic)."""

    action: str
    principal: Principal
    outcome: str = "success"
    patient_id: ClinicPatientId | str | None = None
    job_id: str | None = None
    alert_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


class AuditPage(BaseModel):
    records: list[dict[str, Any]]
    next_token: str | None = None


class AuditStore(Protocol):
    async def append(self, record: AuditRecord) -> None: ...

    async def query(self, clinic_id: str, *, since: str | None, patient_ref_: str | None, limit: int,
                    after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        """A clinic's records in time order from `since` (or after the key `after`), optionally of one
        patient; at most `limit`, and the key to continue after (None at the end)."""


class S3AuditStore:
    """`AuditStore` on an Object Lock bucket."""

    MAX_SCANNED = 5000  # keys looked at per query; a page may then hold fewer records than asked

    def __init__(self, s3: Any, bucket: str) -> None:
        self._s3 = s3
        self.bucket = bucket

    async def append(self, record: AuditRecord) -> None:
        body = record.model_dump_json().encode()
        await self._s3.put_object(Bucket=self.bucket, Key=record.key(), Body=body, ContentType="application/json",
                                  ContentMD5=base64.b64encode(hashlib.md5(body).digest()).decode())  # Object Lock needs it

    async def query(self, clinic_id: str, *, since: str | None, patient_ref_: str | None, limit: int,
                    after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        prefix = f"{AUDIT_PREFIX}{clinic_id}/"
        marker = after if after and after.startswith(prefix) else (prefix + since if since else "")
        matched: list[str] = []
        scanned, truncated, last_scanned = 0, True, None
        # Versions, not current keys: a delete marker (Object Lock allows one) hides a key from a
        # plain listing, and the record behind it must still be shown, flagged.
        request: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
        if marker:
            request["KeyMarker"] = marker
        # The first key after a marker that is no key of its own, as S3 lists it: moto's version listing
        # leaves that one out (real S3 does not), so it is asked for once more, as a current key.
        first_after = []
        if marker:
            probe = await self._s3.list_objects_v2(Bucket=self.bucket, Prefix=prefix, StartAfter=marker, MaxKeys=1)
            first_after = [item["Key"] for item in probe.get("Contents", [])]
        while truncated and scanned < self.MAX_SCANNED and len(matched) <= limit:
            response = await self._s3.list_object_versions(**request)
            floor = last_scanned or marker  # a key's versions may span pages; some servers repeat the marker
            keys = sorted({item["Key"] for item in (*response.get("Versions", []), *response.get("DeleteMarkers", []),
                                                    *[{"Key": key} for key in first_after]) if item["Key"] > floor})
            first_after = []
            for key in keys:
                scanned += 1
                last_scanned = key
                if not patient_ref_ or f"_{patient_ref_}_" in key.removeprefix(prefix):
                    matched.append(key)
                    if len(matched) > limit:
                        break
            truncated = bool(response.get("IsTruncated"))
            if truncated:
                request["KeyMarker"] = response["NextKeyMarker"]
                request["VersionIdMarker"] = response.get("NextVersionIdMarker", "")
        page = matched[:limit]
        records = [await self._first_version(key) for key in page]
        if len(matched) > limit:
            return records, page[-1]
        # Stopped after MAX_SCANNED keys with the listing not finished: go on from the last one looked at.
        return records, (last_scanned if truncated else None)

    async def _first_version(self, key: str) -> dict[str, Any]:
        """A record as first written: later versions of its key are rewrites (flagged, never believed),
        and a delete marker is an attempt to hide it (flagged `deleted`)."""
        listed = await self._s3.list_object_versions(Bucket=self.bucket, Prefix=key)
        versions = [v for v in listed.get("Versions", []) if v["Key"] == key]
        hidden = any(m["Key"] == key for m in listed.get("DeleteMarkers", []))
        first = versions[-1] if versions else None  # S3 lists a key's versions newest first
        if first is None:
            return {"key": key, "deleted": True, "missing": True}  # a marker and no version: cannot happen under the lock
        body = await self._s3.get_object(Bucket=self.bucket, Key=key, VersionId=first["VersionId"])
        async with body["Body"] as stream:
            record = json.loads(await stream.read())
        if len(versions) > 1:
            record["overwritten"] = True  # tamper evidence: someone wrote this key again
        if hidden:
            record["deleted"] = True  # tamper evidence: someone tried to delete it
        return record


class AuditTrail:
    """The recorder the APIs and workers use. `record` never returns unless the record is stored."""

    def __init__(self, store: AuditStore, pseudonym_key: str, service: str) -> None:
        if not pseudonym_key:
            raise ValueError("the audit trail needs SCHIZODOT_PSEUDONYM_KEY")
        self._store = store
        self._key = pseudonym_key
        self.service = service

    def ref(self, stored_patient_key: PatientKey) -> str:
        return patient_ref(self._key, stored_patient_key)

    def ref_of(self, principal: Principal, patient_id: ClinicPatientId | str) -> str | None:
        if principal.clinic_id is None:
            return None
        return self.ref(principal.key_of(patient_id))

    async def record(self, event: AuditEvent) -> AuditRecord:
        """An API event (issue 13's routers call this with their `AuditEvent`)."""
        who = event.principal
        detail = dict(event.detail)
        if event.alert_id:
            detail["alert_id"] = event.alert_id
        return await self._append(
            action=event.action, outcome=event.outcome, actor=who.subject, role=who.role.value,
            clinic_id=who.clinic_id, credential=who.credential.value,
            patient_ref=self.ref_of(who, event.patient_id) if event.patient_id else None,
            job_id=event.job_id, detail=detail)

    async def record_system(self, action: str, *, clinic_id: str | None, stored_patient_key: PatientKey | None = None,
                            job_id: str | None = None, outcome: str = "success",
                            detail: dict[str, Any] | None = None) -> AuditRecord:
        """Something the service itself did with PHI (results sent to the EHR, an erasure run)."""
        return await self._append(
            action=action, outcome=outcome, actor=self.service, role="service", clinic_id=clinic_id,
            credential="service", patient_ref=self.ref(stored_patient_key) if stored_patient_key else None,
            job_id=job_id, detail=detail or {})

    async def _append(self, **fields: Any) -> AuditRecord:
        span = trace.get_current_span().get_span_context()
        record = AuditRecord(record_id=secrets.token_hex(8), at=_now(), service=self.service,
                             request_id=request_id_var.get(),
                             trace_id=format(span.trace_id, "032x") if span.is_valid else None, **fields)
        try:
            await self._store.append(record)
        except Exception as error:
            log.error("audit record could not be written; the request fails", action=record.action,
                      error=f"{type(error).__name__}: {error}")
            raise AuditUnavailable(str(error)) from error
        return record

    async def query(self, clinic_id: str, *, since: str | None, patient_ref_: str | None, limit: int,
                    after: str | None) -> tuple[list[dict[str, Any]], str | None]:
        return await self._store.query(clinic_id, since=since, patient_ref_=patient_ref_, limit=limit, after=after)


def install_audit_failure_handler(app: Any) -> None:
    """A record that cannot be written fails the request: 503, and nothing of the PHI is sent."""
    from fastapi.responses import JSONResponse

    @app.exception_handler(AuditUnavailable)
    async def audit_unavailable(_request: Any, _error: AuditUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": "the audit trail is unavailable; try again"},
                            headers={"Retry-After": "5"})
