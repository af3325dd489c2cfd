"""A patient's history as CSV and a one-page PDF report.

CSV: one row per check-in (oldest first), one column per marker, the unit in
the header (`speech_rate [syllables per min]`); a marker whose unit changed
gets a column per unit rather than mixing them. A marker not assessed in a
check-in leaves its cell empty. Text cells that a spreadsheet would run as a
formula (starting with = + - @) are prefixed with an apostrophe.

PDF: one A4 page drawn with matplotlib's PDF backend: the patient, the clinic
and its time zone, a summary, and the risk level with up to three markers
against the patient's baseline band. Drawing takes about a second on a busy
core, so the router runs it in a worker thread.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from services.results import adherence
from services.results.console.series import RISK_LABELS, marker_series, risk_series
from shared.domain.findings import DosingVerdict, ResultItem
from shared.domain.patients import ClinicPatientId
from shared.domain.stored_results import MEDICATION_WORDS, WORSE, checkin_time, markers, medication_status, risk_level

_FORMULA = ("=", "+", "-", "@", "\t", "\r")
PDF_MARKERS = ("facial_expressivity", "speech_rate", "pitch_variability", "speaking_fraction", "pause_rate")


def _cell(value: object) -> object:
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def history_csv(patient_id: ClinicPatientId, items_oldest_first: Sequence[ResultItem], zone: ZoneInfo) -> str:
    columns: list[tuple[str, str, str]] = []  # (group, name, unit)
    for item in items_oldest_first:
        for reading in markers(item):
            key = (reading.group, reading.name, reading.unit)
            if key not in columns:
                columns.append(key)
    names = [name for _, name, _ in columns]
    header = [f"checkin_time [{zone.key}]", "checkin_time_utc", "patient_id", "job_id", "risk_level",
              "medication", "intake_source", "dosing_review", "dosing_reviewed_by", "dosing_reviewed_at",
              "dosing_review_reason", "dosing_review_revisions", "self_report"] + [
        f"{name} [{unit}]" if names.count(name) == 1 else f"{name} ({group}) [{unit}]"
        for group, name, unit in columns]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for item in items_oldest_first:
        when = checkin_time(item)
        values = {(r.group, r.name, r.unit): r.value for r in markers(item)}
        status = medication_status(item)
        compliance = item.results.compliance
        review = compliance.review or DosingVerdict()
        said = (compliance.self_report.classification if compliance.self_report else None) or ""
        writer.writerow([_cell(v) for v in [
            when.astimezone(zone).isoformat(timespec="seconds"), when.strftime("%Y-%m-%dT%H:%M:%SZ"), patient_id,
            item.job_id, risk_level(item) or "", MEDICATION_WORDS.get(status or "", status or ""),
            adherence.intake_of(item), review.verdict or "", review.by_name or review.by or "",
            review.at or "", review.reason_text or review.reason or "", review.revision or "", said,
        ]] + ["" if values.get(key) is None else values[key] for key in columns])
    return out.getvalue()


def _review_line(item: ResultItem) -> str:
    review = item.results.compliance.review
    if review is None or not review.stored():
        return "Latest dosing: not reviewed on video."
    reason = f" ({review.reason_text})" if review.reason_text else ""
    return (f"Latest dosing reviewed on video: {str(review.verdict).replace('_', ' ')}{reason}, by "
            f"{review.by_name or review.by} at {(review.at or '')[:16].replace('T', ' ')} UTC.")


def _adherence_line(patient_id: ClinicPatientId, items_oldest_first: Sequence[ResultItem], now: datetime) -> str:
    counts = adherence.adherence(patient_id, list(reversed(items_oldest_first)), 30, now).counts
    shown = ", ".join(f"{adherence.WORDS[c]}: {n}" for c, n in counts.items() if n)
    return f"Last 30 days by source: {shown or 'no check-ins'}."


def report_pdf(patient_id: ClinicPatientId, clinic_name: str, items_oldest_first: Sequence[ResultItem], zone: ZoneInfo,
               open_alerts: list[str], generated_at: datetime) -> bytes:
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe in threads

    figure = Figure(figsize=(8.27, 11.69))  # A4 portrait
    figure.text(0.06, 0.965, f"SchizoDot check-in report: {patient_id}", fontsize=15, weight="bold")
    figure.text(0.06, 0.945, f"{clinic_name}. Times in {zone.key}. Generated "
                f"{generated_at.astimezone(zone).strftime('%Y-%m-%d %H:%M %Z')}.", fontsize=9)
    latest = items_oldest_first[-1] if items_oldest_first else None
    if latest:
        first, last = checkin_time(items_oldest_first[0]), checkin_time(latest)
        lines = [
            f"Check-ins: {len(items_oldest_first)}, from {first.astimezone(zone):%Y-%m-%d} to {last.astimezone(zone):%Y-%m-%d}.",
            f"Latest risk level: {risk_level(latest) or 'not assessed'}. Latest medication: "
            f"{MEDICATION_WORDS.get(medication_status(latest) or '', 'not assessed')}.",
            f"Open alerts: {len(open_alerts)}" + (f" ({'; '.join(open_alerts[:3])})" if open_alerts else "") + ".",
            _review_line(latest),
            _adherence_line(patient_id, items_oldest_first, generated_at),
        ]
    else:
        lines = ["No check-ins have been analysed yet."]
    for index, line in enumerate(lines):
        figure.text(0.06, 0.915 - 0.018 * index, line[:130], fontsize=9)

    risk = risk_series(items_oldest_first, zone)
    chosen = [s for name in PDF_MARKERS for s in marker_series(items_oldest_first, zone) if s.key == name and s.has_data]
    panels = [None] + chosen[:3]
    grid = figure.add_gridspec(len(panels), 1, left=0.1, right=0.95, top=0.85, bottom=0.06, hspace=0.55)
    for index, series in enumerate(panels):
        axes = figure.add_subplot(grid[index, 0])
        if series is None:
            axes.plot(risk.times, risk.levels, marker="o", color="#0b5cad")
            axes.set_yticks([0, 1, 2], RISK_LABELS)
            axes.set_ylim(-0.4, 2.4)
            axes.set_title("Risk level per check-in", fontsize=10, loc="left")
        else:
            if series.band_times:
                axes.fill_between(series.band_times, series.band_low, series.band_high, color="#0b5cad", alpha=0.15,
                                  label="usual range (baseline ±1 SD)", step=None)
            axes.plot(series.times, series.values, marker="o", color="#0b5cad", label=series.label)
            if series.notable_times:
                axes.scatter(series.notable_times, series.notable_values, marker="D", facecolors="none",
                             edgecolors="#b00020", s=60, label="notable change", zorder=3)
            worse = WORSE.get(series.key)
            axes.set_title(f"{series.label} ({series.unit})" + (f": {worse} is worse" if worse else ""),
                           fontsize=10, loc="left")
            axes.set_ylabel(series.unit, fontsize=8)
            axes.legend(fontsize=7, loc="best")
        axes.tick_params(labelsize=7)
        axes.set_xlabel(f"check-in time ({zone.key})", fontsize=8)
    out = io.BytesIO()
    figure.savefig(out, format="pdf", metadata={"Title": f"SchizoDot report {patient_id}", "Creator": "SchizoDot"})
    return out.getvalue()
