"""Dosing review: a clinician's verdict on a check-in's observed dosing, and where it goes.

A reviewer watches the review clip and the step evidence frames and says the dose was
taken, not taken, or cannot be told (N and U need a reason from a short list). The
results service, the one writer of SchizodotUsers, records it on the check-in's item:

- `compliance.verification_status`: `verified_by_review` | `not_taken` | `unverifiable`;
- `compliance.compliance_score` as the seed defines it (0-1): 1.0 taken, 0.0 not taken,
  None when it cannot be told (no number is made up for an unknown);
- `compliance.review`: the current verdict (reviewer, time, reason, note), its
  `revision`, the earlier verdicts in `history` (oldest first) and what the pipeline
  had said before any review (`automated`), so nothing is lost by amending.

Two reviewers at once: each write is conditional on the revision it read; the one that
loses reads again and is appended after the other (both kept in order, the later current).
Then the job's results summary is updated, the clinic's missed-dose rule runs again, and a
FHIR R4 MedicationAdministration goes to the EHR. Every verdict is audited before it is written.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

import structlog
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.results.alerts import AlertService, earlier_results
from services.results.ehr.fhir import FHIR_VERSION, medication_administration_bundle
from services.results.ehr.publisher import FHIR_CONTENT_TYPE, EhrPublisher
from services.results.stage.writer import ResultsStore
from shared.aws.history import HistoryReader
from shared.aws.jobs import JobStore
from shared.aws.storage import ObjectStore
from shared.domain.checkin import artifact_key
from shared.domain.findings import ResultItem
from shared.domain.job import COMPLETED, FAILED, Job
from shared.domain.stored_results import stored_result
from shared.identity.audit import AuditEvent, AuditTrail
from shared.identity.principal import Principal
from shared.runtime.events import encode_event

log = structlog.get_logger()

Verdict = Literal["taken", "not_taken", "unverifiable"]
VERIFICATION_STATUS = {"taken": "verified_by_review", "not_taken": "not_taken", "unverifiable": "unverifiable"}
REVIEWED_STATUSES = frozenset(VERIFICATION_STATUS.values())
COMPLIANCE_SCORE: dict[str, float | None] = {"taken": 1.0, "not_taken": 0.0, "unverifiable": None}
# The short lists a reviewer picks from for N and U (the note says the rest).
REASONS: dict[str, dict[str, str]] = {
    "not_taken": {
        "no_pill_shown": "no pill was shown",
        "pill_not_placed": "the pill was not put in the mouth",
        "pill_removed": "the pill was taken out or spat out",
        "other": "other (see the note)",
    },
    "unverifiable": {
        "pill_not_visible": "the pill cannot be seen",
        "mouth_not_shown": "the mouth was not shown empty",
        "face_out_of_view": "the face left the picture",
        "poor_video": "the video is too dark or blurred",
        "no_clip": "no recording of the dosing to watch",
        "other": "other (see the note)",
    },
}
NOTE_MAX = 1000
WRITE_ATTEMPTS = 8
REVIEW_EVENT = "org.schizodot.dosing.reviewed.v1"


class DosingReview(BaseModel):
    """`POST /api/v1/jobs/{job_id}/dosing-review`."""

    model_config = ConfigDict(extra="forbid")

    verdict: Verdict
    reason: str | None = Field(None, description="required for not_taken and unverifiable: one of REASONS[verdict]")
    note: str | None = Field(None, max_length=NOTE_MAX)

    @model_validator(mode="after")
    def _reason_fits(self) -> "DosingReview":
        allowed = REASONS.get(self.verdict)
        if allowed is None:
            if self.reason is not None:
                raise ValueError("a 'taken' verdict takes no reason (write a note instead)")
            return self
        if not self.reason:
            raise ValueError(f"a '{self.verdict}' verdict needs a reason, one of: {', '.join(allowed)}")
        if self.reason not in allowed:
            raise ValueError(f"reason '{self.reason}' is not one of: {', '.join(allowed)}")
        if self.reason == "other" and not (self.note or "").strip():
            raise ValueError("reason 'other' needs a note saying what it was")
        return self


class PillBox(BaseModel):
    """A reviewer's box around the pill on one evidence frame, in the frame's pixels."""

    model_config = ConfigDict(extra="forbid")

    step: str = Field(pattern=r"^[a-z_]{1,40}$")
    x: int = Field(ge=0, le=10000)
    y: int = Field(ge=0, le=10000)
    width: int = Field(ge=2, le=10000)
    height: int = Field(ge=2, le=10000)


class ReviewConflict(Exception):
    """The check-in has no result to review yet (still processing, or failed)."""


class ReviewNotFound(Exception):
    pass


def _now() -> datetime:
    return datetime.now(timezone.utc)


def reviewed(compliance: dict[str, Any], review: DosingReview, who: Principal, at: str,
             boxes: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The compliance block with `review` applied on top of what it held (earlier verdicts kept)."""
    before = compliance.get("review") or {}
    entry = {"verdict": review.verdict, "reason": review.reason,
             "reason_text": REASONS.get(review.verdict, {}).get(review.reason or "") or None,
             "note": (review.note or "").strip() or None, "by": who.subject,
             "by_name": who.display_name or who.subject, "at": at}
    if boxes:
        entry["pill_boxes"] = boxes
    history = list(before.get("history") or [])
    if before.get("verdict"):
        history.append({k: v for k, v in before.items() if k not in ("history", "automated", "revision")})
    automated = before.get("automated") or {
        "verification_status": compliance.get("verification_status"),
        "compliance_score": compliance.get("compliance_score")}
    return {**compliance, "verification_status": VERIFICATION_STATUS[review.verdict],
            "compliance_score": COMPLIANCE_SCORE[review.verdict],
            "review": {**entry, "revision": int(before.get("revision") or 0) + 1, "history": history,
                       "automated": automated}}


def needs_review(item: ResultItem) -> bool:
    """Intake not verified and no reviewer has said yet."""
    compliance = item.results.compliance
    return not (compliance.review and compliance.review.stored()) and compliance.verification_status != "compliant"


def pill_box_key(job_id: str, step: str, revision: int) -> str:
    """Where a reviewer's pill box is kept: beside the job's evidence frames, so erasing the job
    erases it (services/results/erasure/handler.py removes `artifacts/<job>/`); docs/dosing-review.md."""
    return artifact_key(job_id, f"labels/pill-box-{step}-r{revision}")


@dataclass
class DosingReviews:
    jobs: JobStore
    history: HistoryReader
    writer: ResultsStore
    audit: AuditTrail
    storage: ObjectStore | None = None  # pill boxes
    alerts: AlertService | None = None
    ehr: EhrPublisher | None = None
    patient_identifier_system: str = "urn:schizodot:patient-id"
    alert_history: int = 10
    clock: Callable[[], datetime] = _now

    async def job_of(self, who: Principal, job_id: str, action: str) -> Job:
        job = await self.jobs.get(job_id)
        if job is None or not who.owns(job.clinic_id):
            await self.audit.record(AuditEvent(action, who, outcome="not_found", job_id=job_id))
            raise ReviewNotFound(f"no job {job_id}")
        return job

    async def record(self, who: Principal, job_id: str, review: DosingReview,
                     boxes: list[PillBox] | None = None) -> dict[str, Any]:
        """Record the verdict; the updated compliance block. ReviewNotFound (404), ReviewConflict (409)."""
        action = "dosing.review"
        job = await self.job_of(who, job_id, action)
        patient = job.patient_id.patient
        if job.status != COMPLETED:
            await self.audit.record(AuditEvent(action, who, outcome="conflict", patient_id=patient, job_id=job_id))
            why = "failed, so there is no result to review" if job.status == FAILED else \
                f"is still {job.status}; review it once its analysis is done"
            raise ReviewConflict(f"check-in {job_id} {why}")
        found = await self.history.for_job(job.patient_id, job_id)
        target = stored_result(found) if found is not None else None
        if target is None:
            await self.audit.record(AuditEvent(action, who, outcome="not_found", patient_id=patient, job_id=job_id))
            raise ReviewNotFound(f"no job {job_id}")
        # Audited before it is written: no verdict is stored unaudited.
        await self.audit.record(AuditEvent(action, who, patient_id=patient, job_id=job_id, detail={
            "verdict": review.verdict, "reason": review.reason, "note_chars": len(review.note or ""),
            "pill_boxes": len(boxes or [])}))
        # The first try writes over the item just found; the write is conditional on its revision,
        # so another reviewer's verdict in between fails it and the next try reads theirs.
        stored, item = found, target
        for attempt in range(WRITE_ATTEMPTS):
            compliance = item.results.compliance
            revision = (compliance.review.revision if compliance.review else None) or 0
            stamp = self.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            saved_boxes = await self._save_boxes(job, item, boxes or [], revision + 1, who, stamp)
            updated = reviewed(compliance.stored(), review, who, stamp, saved_boxes)
            if await self.writer.replace_compliance(item.patient_key, item.timestamp, updated, revision):
                break
            await asyncio.sleep(0.02 * (attempt + 1))  # another reviewer wrote first: read theirs, go after it
            stored = await self.writer.get(target.patient_key, target.timestamp)
            if stored is None:
                raise ReviewNotFound(f"no job {job_id}")
            item = stored_result(stored)
        else:
            raise RuntimeError(f"check-in {job_id}: the review could not be written after {WRITE_ATTEMPTS} tries")
        await self.jobs.update_summary(job_id, {"compliance_score": updated["compliance_score"],
                                                "verification_status": updated["verification_status"]})
        await self._after(job, stored_result({**stored, "results": {**stored["results"], "compliance": updated}}))
        return updated

    async def _save_boxes(self, job: Job, item: ResultItem, boxes: list[PillBox], revision: int,
                          who: Principal, at: str) -> list[dict[str, Any]]:
        if not boxes:
            return []
        if self.storage is None:
            raise RuntimeError("no object store: pill boxes cannot be kept")
        compliance = item.results.compliance
        frames = {s.step: s.evidence_frame for s in compliance.steps or []}
        frames |= {f.step: f.key for f in compliance.evidence_frames or []}
        saved = []
        for box in boxes:
            frame = frames.get(box.step)
            if not frame:
                continue  # a step without a frame has nothing to label
            key = pill_box_key(job.job_id, box.step, revision)
            await self.storage.put_json(key, {
                "kind": "pill_box", "clinic_id": job.clinic_id, "job_id": job.job_id, "step": box.step,
                "frame_key": frame, "box_px": {"x": box.x, "y": box.y, "width": box.width, "height": box.height},
                "labelled_by": who.subject, "labelled_at": at})
            saved.append({"step": box.step, "frame_key": frame, "key": key,
                          "box_px": {"x": box.x, "y": box.y, "width": box.width, "height": box.height}})
        return saved

    async def _after(self, job: Job, item: ResultItem) -> None:
        """The alert rule and the EHR, after the verdict is stored; a failure here is logged and does not
        undo the verdict (the next review, or the clinic's EHR reconciliation, carries it)."""
        if self.alerts is not None and job.clinic_id:
            try:
                earlier = await earlier_results(self.history, item, self.alert_history)
                await self.alerts.on_review(job.clinic_id, item, earlier)
            except Exception as error:
                log.error("alert rules after a dosing review failed", error=f"{type(error).__name__}: {error}"[:300])
        if self.ehr is not None and self.ehr.enabled:
            try:
                bundle = medication_administration_bundle(item, self.patient_identifier_system)
                revision = item.results.compliance.review.revision if item.results.compliance.review else None
                await self.audit.record_system("ehr.dosing_review_sent", clinic_id=job.clinic_id,
                                               stored_patient_key=job.patient_id, job_id=job.job_id,
                                               detail={"revision": revision})
                event_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"urn:schizodot:dosing-review:{job.job_id}:{revision}"))
                body = encode_event(REVIEW_EVENT, self.ehr.source, job.job_id, bundle, event_id=event_id,
                                    content_type=FHIR_CONTENT_TYPE,
                                    extensions={"dataschema": "http://hl7.org/fhir/R4/bundle.html",
                                                "fhirversion": FHIR_VERSION})
                await self.ehr.publish(job.job_id, body)
            except Exception as error:
                log.error("the dosing review could not be sent to the EHR",
                          error=f"{type(error).__name__}: {error}"[:300])
