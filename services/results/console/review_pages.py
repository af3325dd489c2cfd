"""The console's dosing review: the clinic's "Dosing to review" queue and the review page.

Mounted by `create_console_router` when the results service hands it `DosingReviews`
(services/results/dosing.py writes the verdict, audits it, runs the alert rule again and
tells the EHR). Each route takes the signed-in clinician (`caller`) and the console
(`console_of`) as dependencies, so scoping and audit work exactly as on every other
console page (context.py).

- `GET  /review`: the queue, oldest first: check-ins of the clinic whose intake is not verified
  and that no one has reviewed;
- `GET  /patients/{p}/checkins/{j}/review`: the review clip (looping, speed control), the step
  evidence frames (a pill's box may be drawn on one), the verdict form (keys T, N, U) and the
  verdicts so far; also for amending a reviewed check-in;
- `POST /patients/{p}/checkins/{j}/review`: the verdict; 303 to the next check-in of the queue;
- `GET  /patients/{p}/checkins/{j}/clip`: 303 to a presigned GET of the review clip.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from pydantic import ValidationError

from services.results.console import views
from services.results.console.context import Caller, Console, NotFound, caller, console_of, same_site
from services.results.dosing import (
    REASONS,
    DosingReview,
    DosingReviews,
    PillBox,
    ReviewConflict,
    ReviewNotFound,
    needs_review,
)
from shared.domain.checkin import artifacts_prefix
from shared.domain.findings import ResultItem
from shared.domain.patients import ClinicPatientId
from shared.domain.stored_results import checkin_time, fmt_local

QUEUE_HISTORY = 100  # newest check-ins looked at per patient
QUEUE_CONCURRENCY = 16

router = APIRouter()


@dataclass(frozen=True)
class QueueEntry:
    patient_id: ClinicPatientId
    job_id: str
    timestamp: str
    when: str
    status: str


def _q(value: str) -> str:
    return quote(value, safe="")


def reviews_of(console: Console = Depends(console_of)) -> DosingReviews:
    """The dosing reviews (this router is mounted only when the console has them)."""
    assert console.reviews is not None
    return console.reviews


async def queue_of(console: Console, c: Caller) -> list[QueueEntry]:
    """The clinic's check-ins waiting for a review, oldest first."""
    reads = asyncio.Semaphore(QUEUE_CONCURRENCY)

    async def waiting(entry) -> list[QueueEntry]:
        async with reads:
            items = await console.clinic_history(c, entry.patient_id, QUEUE_HISTORY)
        return [QueueEntry(entry.patient_id, i.job_id, i.timestamp, fmt_local(checkin_time(i), c.clinic.zone),
                           i.results.compliance.verification_status or "not_assessed")
                for i in items if needs_review(i)]
    found = await asyncio.gather(*(waiting(e) for e in await console.roster.patients(c.clinic_id)))
    return sorted((e for entries in found for e in entries), key=lambda e: e.timestamp)


def review_url(console: Console, entry: QueueEntry) -> str:
    return f"{console.prefix}/patients/{_q(entry.patient_id)}/checkins/{_q(entry.job_id)}/review"


@router.get("/review")
async def queue_page(c: Caller = Depends(caller), console: Console = Depends(console_of), done: str = ""):
    queue = await queue_of(console, c)
    await console.record(c, "console.review_queue", detail={"waiting": len(queue)})
    return console.page("review_queue.html", c, queue=queue, done=done == "1")


async def review_page(console: Console, c: Caller, item: ResultItem, status: int = 200, problem: str | None = None,
                      form: dict[str, str] | None = None):
    compliance = item.results.compliance
    queue = await queue_of(console, c)
    position = next((n for n, e in enumerate(queue, 1) if e.job_id == item.job_id), None)
    view = views.checkin_view(item, None, c.clinic.zone)
    frames = []
    for step in view.evidence_steps:
        found = next((f for f in compliance.evidence_frames or [] if f.step == step), None)
        frames.append({"step": step, "label": views.STEP_LABELS.get(step, step.replace("_", " ")),
                       "step_id": found.step_id if found else None, "t": found.t if found else None})
    review = compliance.review if compliance.review and compliance.review.stored() else None
    history = list(review.history or []) + ([review] if review.verdict else []) if review else []
    clip = compliance.review_clip
    return console.page("review.html", c, status=status, patient_id=item.patient, job_id=item.job_id, view=view,
                        compliance=compliance, clip=clip if clip and clip.stored() else None, frames=frames,
                        reasons=REASONS, verdicts=list(reversed(history)), review=review, problem=problem,
                        form=form or {}, position=position, waiting=len(queue),
                        self_report=compliance.self_report if compliance.self_report and compliance.self_report.stored()
                        else None)


@router.get("/patients/{patient_id}/checkins/{job_id}/review")
async def review_get(patient_id: str, job_id: str, c: Caller = Depends(caller),
                     console: Console = Depends(console_of)):
    try:
        item = await console.checkin_of(c, patient_id, job_id, "console.review_view")
    except NotFound:
        return console.not_found(c)
    await console.record(c, "console.review_view", patient_id=item.patient, job_id=job_id)
    return await review_page(console, c, item)


def _verdict_of(form: dict[str, str]) -> tuple[DosingReview, list[PillBox]]:
    """The form's verdict and pill box (ValidationError, ValueError or KeyError when they are not one)."""
    review = DosingReview(verdict=form.get("verdict") or None, reason=form.get("reason") or None,
                          note=form.get("note") or None)
    boxes = [PillBox(step=form["box_step"], x=int(float(form["box_x"])), y=int(float(form["box_y"])),
                     width=int(float(form["box_w"])), height=int(float(form["box_h"])))] \
        if form.get("box_step") else []
    return review, boxes


@router.post("/patients/{patient_id}/checkins/{job_id}/review")
async def review_post(patient_id: str, job_id: str, request: Request, c: Caller = Depends(caller),
                      console: Console = Depends(console_of), reviews: DosingReviews = Depends(reviews_of)):
    same_site(request)
    raw = parse_qs((await request.body()).decode("utf-8", "replace")[:16384])
    form = {k: (v[0] if v else "") for k, v in raw.items()}
    if console.sessions is not None:
        console.sessions.check_csrf(request, form.get("csrf", ""))
    try:
        item = await console.checkin_of(c, patient_id, job_id, "dosing.review")
    except NotFound:
        return console.not_found(c)
    try:
        review, boxes = _verdict_of(form)
    except (ValidationError, ValueError, KeyError) as error:
        return await review_page(console, c, item, status=422, problem=_problem(error), form=form)
    try:
        await reviews.record(c.principal, job_id, review, boxes)
    except ReviewNotFound:
        return console.not_found(c)
    except ReviewConflict as conflict:
        return await review_page(console, c, item, status=409, problem=str(conflict), form=form)
    following = [e for e in await queue_of(console, c) if e.job_id != job_id]
    target = review_url(console, following[0]) if following else f"{console.prefix}/review?done=1"
    return RedirectResponse(target, status_code=303, headers={"Cache-Control": "no-store"})


@router.get("/patients/{patient_id}/checkins/{job_id}/clip")
async def clip(patient_id: str, job_id: str, c: Caller = Depends(caller), console: Console = Depends(console_of)):
    try:
        item = await console.checkin_of(c, patient_id, job_id, "console.review_clip_get")
    except NotFound:
        return console.not_found(c)
    clip = item.results.compliance.review_clip
    key = (clip.key if clip else None) or ""
    if not key.startswith(artifacts_prefix(job_id)):
        await console.record(c, "console.review_clip_get", "not_found", patient_id=item.patient, job_id=job_id)
        return console.not_found(c)
    await console.record(c, "console.review_clip_get", patient_id=item.patient, job_id=job_id)
    return RedirectResponse(await console.media.presign_get(key, console.media_url_seconds), status_code=303,
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


def _problem(error: Exception) -> str:
    if isinstance(error, ValidationError):
        messages = []
        for e in error.errors():
            where = ".".join(str(p) for p in e.get("loc") or ())
            text = str(e.get("msg", "")).removeprefix("Value error, ")
            messages.append(f"{where}: {text}" if where and where not in text else text)
        return "; ".join(messages)
    return f"the pill box is not a box in pixels ({error})"


__all__ = ["router"]
