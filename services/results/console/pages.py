"""The console's pages for a clinic's patients: the patient list, alerts, a patient's history, a
check-in, its video and evidence frames, the exports, and acknowledging an alert.

Each route takes the signed-in clinician (`caller`) and the console (`console_of`) as
dependencies; a patient or check-in outside the caller's clinic is the same 404 page as one
that does not exist, and every read is audited before anything is served (context.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import plotly
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from services.results import adherence, dosing
from services.results.alerts import NOTE_MAX, AlreadyAcknowledged
from services.results.console import exports, plots, series, views
from services.results.console.context import Caller, Console, NotFound, caller, console_of, same_site
from shared.domain.checkin import artifacts_prefix
from shared.domain.findings import ResultItem
from shared.domain.job import Job
from shared.domain.patients import ClinicPatientId
from shared.domain.stored_results import checkin_time, fmt_local

HERE = Path(__file__).resolve().parent
PLOTLY_JS = Path(plotly.__file__).resolve().parent / "package_data" / "plotly.min.js"
STATIC = {
    "console.css": (HERE / "static" / "console.css", "text/css; charset=utf-8"),
    "review.js": (HERE / "static" / "review.js", "text/javascript; charset=utf-8"),
    "console.js": (HERE / "static" / "console.js", "text/javascript; charset=utf-8"),
    "login.js": (HERE / "static" / "login.js", "text/javascript; charset=utf-8"),
    "plotly.min.js": (PLOTLY_JS, "text/javascript; charset=utf-8"),
}
_STEP = re.compile(r"^[a-z_]{1,40}$")
LIST_CONCURRENCY = 16  # history reads at once for the patient list (one query per patient)

router = APIRouter()


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(status_code=404, detail="not found")
    path, media_type = STATIC[name]
    return Response(path.read_bytes(), media_type=media_type,
                    headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"})


@router.get("/", response_class=HTMLResponse)
async def patient_list(c: Caller = Depends(caller), q: str = "", sort: str = "risk", order: str = "desc",
                       console: Console = Depends(console_of)):
    query = q.strip()[:100]
    entries = [e for e in await console.roster.patients(c.clinic_id) if query.lower() in e.patient_id.lower()]
    open_by_patient: dict[ClinicPatientId, int] = {}
    for alert in await console.alerts.open_alerts(c.clinic_id):
        open_by_patient[alert.patient_id] = open_by_patient.get(alert.patient_id, 0) + 1
    reads = asyncio.Semaphore(LIST_CONCURRENCY)

    async def row(entry):
        async with reads:
            items = await console.clinic_history(c, entry.patient_id, 20)
        return views.patient_row(entry, items, open_by_patient.get(entry.patient_id, 0), c.clinic.zone)
    rows = list(await asyncio.gather(*(row(e) for e in entries)))
    sort = sort if sort in views.SORT_KEYS else "risk"
    rows = views.sort_rows(rows, sort, order != "asc")
    await console.record(c, "console.patient_list", detail={"patients": len(rows)})
    return console.page("patients.html", c, rows=rows, q=query, sort=sort,
                        order="asc" if order == "asc" else "desc")


@router.get("/alerts", response_class=HTMLResponse)
async def open_alerts(c: Caller = Depends(caller), console: Console = Depends(console_of)):
    found = await console.alerts.open_alerts(c.clinic_id)
    await console.record(c, "console.alert_list", detail={"alerts": len(found)})
    return console.page("alerts.html", c, alerts=found)


@router.get("/patients/{patient_id}", response_class=HTMLResponse)
async def patient_page(patient_id: str, c: Caller = Depends(caller), console: Console = Depends(console_of)):
    try:
        patient = await console.patient_of(c, patient_id, "console.patient_view")
    except NotFound:
        return console.not_found(c)
    items = await console.clinic_history(c, patient, console.history_limit)
    oldest_first = list(reversed(items))
    zone, zone_name, now = c.clinic.zone, c.clinic.timezone, console.clock()
    marker_plots = [{"series": s, "figure": plots.marker_figure(s, zone_name) if s.has_data else None}
                    for s in series.marker_series(oldest_first, zone)]
    expressivity = next((p for p in marker_plots if p["series"].key == "facial_expressivity"), None)
    active = [j for j in await console.jobs.list_for_patient(c.key_of(patient), limit=10)
              if j.active and j.clinic_id == c.clinic_id]
    patient_alerts = views.alert_sort(await console.alerts.for_patient(c.clinic_id, patient))
    await console.record(c, "console.patient_view", patient_id=patient, detail={"checkins": len(items)})
    risk = series.risk_series(oldest_first, zone)
    return console.page(
        "patient.html", c, patient_id=patient, items=items, alerts=patient_alerts, active=active,
        risk_figure=plots.risk_figure(risk, zone_name) if risk.times else None, risk=risk,
        expressivity=expressivity, marker_plots=[p for p in marker_plots if p is not expressivity],
        calendar=views.adherence_calendar(items, zone, now.astimezone(zone).date()),
        adherence={days: adherence.adherence(patient, items, days, now) for days in (7, 30)},
        adherence_words=adherence.WORDS, intake_of=adherence.intake_of,
        needs_review=dosing.needs_review, reviews_on=console.reviews is not None,
        row=views.patient_row(await console.roster.get(c.clinic_id, patient), items,
                              sum(a.state == "open" for a in patient_alerts), zone),
        when=lambda item: fmt_local(checkin_time(item), zone))


@router.get("/patients/{patient_id}/checkins/{job_id}", response_class=HTMLResponse)
async def checkin_page(patient_id: str, job_id: str, c: Caller = Depends(caller),
                       console: Console = Depends(console_of)):
    try:
        item = await console.checkin_of(c, patient_id, job_id, "console.checkin_view")
    except NotFound:
        return console.not_found(c)
    job: Job | None = await console.jobs.get(job_id)
    if job is not None and (job.patient_id != item.patient_key or job.clinic_id != c.clinic_id):
        job = None
    view = views.checkin_view(item, job, c.clinic.zone, c.clinic.checkin)
    results = item.results
    facial = results.facial_emotion
    timeline = facial.timeline or []
    labels = [e.emotion for e in facial.all_emotions or [] if e.emotion]
    shapes = (facial.expressivity.blendshape_std if facial.expressivity else None) or {}
    await console.record(c, "console.checkin_view", patient_id=item.patient, job_id=job_id)
    return console.page("checkin.html", c, patient_id=item.patient, job_id=job_id, view=view, facial=facial,
                        timeline_figure=plots.emotion_timeline_figure(timeline, labels) if timeline else None,
                        expressivity_figure=plots.expressivity_figure(shapes) if shapes else None,
                        fusion=results.multimodal_fusion, summary=results.clinical_summary,
                        compliance=results.compliance,
                        needs_review=dosing.needs_review(item), reviews_on=console.reviews is not None)


async def media_redirect(console: Console, c: Caller, patient_id: str, job_id: str, action: str,
                         key_of: Callable[[ResultItem], str | None], what: str) -> Response:
    """303 to a short-lived presigned GET of the check-in's media at `key_of(item)`; audited."""
    try:
        item = await console.checkin_of(c, patient_id, job_id, action)
    except NotFound:
        return console.not_found(c)
    key = key_of(item)
    if not key:
        await console.record(c, action, "not_found", patient_id=item.patient, job_id=job_id, detail={"media": what})
        return console.not_found(c)
    await console.record(c, action, patient_id=item.patient, job_id=job_id, detail={"media": what})
    return RedirectResponse(await console.media.presign_get(key, console.media_url_seconds), status_code=303,
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


@router.get("/patients/{patient_id}/checkins/{job_id}/video")
async def video(patient_id: str, job_id: str, c: Caller = Depends(caller), console: Console = Depends(console_of)):
    return await media_redirect(console, c, patient_id, job_id, "console.video_get",
                                lambda item: item.s3_key, "video")


def evidence_key(item: ResultItem, job_id: str, step: str) -> str | None:
    """The stored evidence frame of `step`, if it is one of this job's artifacts."""
    if not _STEP.match(step):
        return None
    for found in item.results.compliance.steps or []:
        key = found.evidence_frame
        if found.step == step and key and key.startswith(artifacts_prefix(job_id)):
            return key
    return None


@router.get("/patients/{patient_id}/checkins/{job_id}/evidence/{step}")
async def evidence(patient_id: str, job_id: str, step: str, c: Caller = Depends(caller),
                   console: Console = Depends(console_of)):
    return await media_redirect(console, c, patient_id, job_id, "console.evidence_get",
                                lambda item: evidence_key(item, job_id, step),
                                f"evidence:{step}" if _STEP.match(step) else "evidence")


@router.get("/patients/{patient_id}/history.csv")
async def export_csv(patient_id: str, c: Caller = Depends(caller), console: Console = Depends(console_of)):
    try:
        patient = await console.patient_of(c, patient_id, "console.export_csv")
    except NotFound:
        return console.not_found(c)
    items = list(reversed(await console.clinic_history(c, patient, 1000)))
    await console.record(c, "console.export_csv", patient_id=patient, detail={"checkins": len(items)})
    body = exports.history_csv(patient, items, c.clinic.zone)
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{patient}-history.csv"', "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})


@router.get("/patients/{patient_id}/report.pdf")
async def export_pdf(patient_id: str, c: Caller = Depends(caller), console: Console = Depends(console_of)):
    try:
        patient = await console.patient_of(c, patient_id, "console.export_pdf")
    except NotFound:
        return console.not_found(c)
    items = list(reversed(await console.clinic_history(c, patient, console.history_limit)))
    titles = [a.title for a in await console.alerts.for_patient(c.clinic_id, patient) if a.state == "open"]
    await console.record(c, "console.export_pdf", patient_id=patient, detail={"checkins": len(items)})
    body = await run_in_threadpool(exports.report_pdf, patient, c.clinic.name or c.clinic_id, items,
                                   c.clinic.zone, titles, console.clock())
    return Response(body, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{patient}-report.pdf"', "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff"})


@router.post("/alerts/{alert_id}/acknowledge")
async def acknowledge(alert_id: str, request: Request, c: Caller = Depends(caller),
                      console: Console = Depends(console_of)):
    same_site(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace")[:16384])
    if console.sessions is not None:
        console.sessions.check_csrf(request, (form.get("csrf") or [""])[0])
    note = (form.get("note") or [""])[0].strip()
    back = (form.get("back") or [""])[0]
    alert = await console.alerts.get(c.clinic_id, alert_id) if len(alert_id) < 80 else None
    if alert is None:
        await console.record(c, "console.alert_acknowledge", "not_found", alert_id=alert_id[:80])
        return console.not_found(c)
    if not note:
        return console.page("alerts.html", c, status=422, alerts=await console.alerts.open_alerts(c.clinic_id),
                            problem="Write a note saying what was done before acknowledging the alert.")
    # The audit record (issue 12) is written before the change: no unaudited acknowledgement.
    await console.record(c, "console.alert_acknowledge", patient_id=alert.patient_id, job_id=alert.job_id,
                         alert_id=alert_id, detail={"note_chars": len(note)})
    try:
        await console.alerts.acknowledge(c.clinic_id, alert_id, c.principal.display_name or c.principal.subject,
                                         note[:NOTE_MAX], console.clock().strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    except AlreadyAcknowledged:
        pass  # someone was first; the page shows who
    target = f"{console.prefix}/alerts" if back == "alerts" else f"{console.prefix}/patients/{alert.patient_id}"
    return RedirectResponse(f"{target}#alert-{alert_id}", status_code=303)
