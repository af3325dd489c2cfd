"""The erasure routes of the results API (clinic_admin only), mounted by
`services.results.api.app.create_app`: `DELETE /api/v1/patients/{patient_id}` records the
erasure, queues it for the results worker (handler.py) and waits a while for its receipt;
`GET /api/v1/erasures/{erasure_id}` is the receipt."""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import JSONResponse

from services.results.api.context import ADMIN, ResultsApi, api_of
from services.results.api.params import PatientIdPath
from services.results.erasure.handler import ErasureRequested, encode_erasure
from services.results.erasure.store import Receipt, new_erasure_id, receipt_of, wait_for_erasure
from shared.identity.audit import AuditEvent
from shared.identity.principal import Principal

_ERASURE_ID = re.compile(r"^erasure-[0-9a-f]{16}$")


router = APIRouter(tags=["erasure"])


@router.delete("/api/v1/patients/{patient_id}", response_model=Receipt,
               responses={202: {"description": "still running: follow /api/v1/erasures/{erasure_id}"}})
async def erase_patient(patient_id: str = PatientIdPath, who: Principal = Depends(ADMIN),
                        api: ResultsApi = Depends(api_of)):
    """Erase everything stored of a patient (media, artifacts, evidence frames, jobs, results, links).
    Idempotent: a patient with nothing left gets a receipt with zero counts."""
    assert who.clinic_id is not None
    erasure_id = new_erasure_id()
    await api.audit.record(AuditEvent("erasure.requested", who, patient_id=patient_id,
                                      detail={"erasure_id": erasure_id}))
    await api.erasures.create(erasure_id, who.clinic_id, api.audit.ref_of(who, patient_id) or "", who.subject)
    await api.enqueue_erasure(encode_erasure(
        ErasureRequested(erasure_id=erasure_id, clinic_id=who.clinic_id, patient_id=patient_id)))
    record = await wait_for_erasure(api.erasures, erasure_id, api.erasure_wait_seconds)
    receipt = receipt_of(record or {"erasure_id": erasure_id, "status": "requested", "requested_at": ""},
                         patient_id)
    if receipt.status != "done":
        return JSONResponse(status_code=202, content=receipt.model_dump(),
                            headers={"Location": f"/api/v1/erasures/{erasure_id}"})
    return receipt


@router.get("/api/v1/erasures/{erasure_id}", response_model=Receipt)
async def erasure_status(erasure_id: str, who: Principal = Depends(ADMIN), api: ResultsApi = Depends(api_of)
                         ) -> Receipt:
    """An erasure's receipt (its counts once the inventory is taken)."""
    record = await api.erasures.get(erasure_id) if _ERASURE_ID.match(erasure_id) else None
    if record is None or not who.owns(record.get("clinic_id")):
        raise HTTPException(status_code=404, detail=f"no erasure {erasure_id}")
    return receipt_of(record)
