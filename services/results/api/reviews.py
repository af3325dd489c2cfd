"""The dosing review and adherence routes of the results API (services/results/dosing.py,
services/results/adherence.py), mounted by `services.results.api.app.create_app`.

- `POST /api/v1/jobs/{job_id}/dosing-review` (clinician, clinic_admin): a verdict on the
  check-in's observed dosing; answers with the updated `compliance` block. 404 for a job of
  another clinic exactly as for one that does not exist, 409 while it is still processing,
  422 for a verdict outside the three or N/U without a reason.
- `GET /api/v1/patients/{patient_id}/adherence?days=30` (clinician, clinic_admin,
  ehr_integration): counts of check-ins by what their dose rests on, each check-in with its
  category, and the streak.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query
from pydantic import BaseModel

from services.results import adherence
from services.results.api.context import READER, REVIEWER, ResultsApi, api_of
from services.results.api.params import JobId, PatientIdPath
from services.results.dosing import DosingReview, PillBox, ReviewConflict, ReviewNotFound
from shared.domain.patients import ClinicPatientId
from shared.domain.stored_results import stored_result
from shared.identity.audit import AuditEvent
from shared.identity.principal import Principal

ADHERENCE_HISTORY = 400  # check-ins read for a window (more than a year of daily check-ins)


class DosingReviewRequest(DosingReview):
    pill_boxes: list[PillBox] = []


class ComplianceAnswer(BaseModel):
    job_id: str
    compliance: dict[str, Any]


router = APIRouter(tags=["dosing review"])


@router.post("/api/v1/jobs/{job_id}/dosing-review", response_model=ComplianceAnswer,
             responses={404: {"description": "no such job in your clinic"},
                        409: {"description": "the check-in is still being analysed (or failed)"}})
async def dosing_review(body: DosingReviewRequest, job_id: str = JobId, who: Principal = Depends(REVIEWER),
                        api: ResultsApi = Depends(api_of)) -> ComplianceAnswer:
    """Record a reviewer's verdict on the recorded dosing: `taken`, `not_taken` or `unverifiable`
    (the last two with a `reason` from the list the 422 names). A later verdict amends it; every
    one is kept in `compliance.review.history`."""
    review = DosingReview(verdict=body.verdict, reason=body.reason, note=body.note)
    try:
        compliance = await api.reviews_or_404().record(who, job_id, review, body.pill_boxes)
    except ReviewNotFound:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    except ReviewConflict as conflict:
        raise HTTPException(status_code=409, detail=str(conflict))
    return ComplianceAnswer(job_id=job_id, compliance=compliance)


@router.get("/api/v1/patients/{patient_id}/adherence")
async def patient_adherence(patient_id: str = PatientIdPath, days: int = Query(30, ge=1, le=365),
                            who: Principal = Depends(READER), api: ResultsApi = Depends(api_of)) -> dict[str, Any]:
    """Check-ins of the last `days` days by what the dose rests on: verified by review, verified by a
    validated detector, reported taken, reported missed or stopped, not taken, unverifiable, not
    assessed; and the streak of verified or reported doses (saying which)."""
    reviews = api.reviews_or_404()
    stored = await reviews.history.latest(who.key_of(patient_id), ADHERENCE_HISTORY)
    items = [item for item in map(stored_result, stored) if item.clinic_id in (None, who.clinic_id)]
    found = adherence.adherence(ClinicPatientId(patient_id), items, days, reviews.clock())
    await reviews.audit.record(AuditEvent("patient.adherence_read", who, patient_id=patient_id,
                                          detail={"days": days, "checkins": len(found.checkins)}))
    return found.as_dict()
