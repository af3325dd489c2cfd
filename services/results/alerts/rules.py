"""The alert rules, as pure functions of a patient's results.

`evaluate(item, earlier, rules)` looks at one new result (a SchizodotUsers
item) with the patient's earlier results (newest first) and returns the alerts
it raises; `missed_checkins(entries, rules, now)` is the scheduled sweep's
rule. Each draft carries its evidence: the values, units and baselines that
made it fire, so the alert can be read without opening the check-in.

1. risk:            the check-in's risk level is in `risk_levels` (default: high).
2. missed_medication: the medication was seen *not taken* (by the detector or a
                    reviewer of the video) in this check-in and
                    the `missed_medication_streak - 1` before it (a check-in
                    that could not verify intake ends the run: unknown is not
                    missed). Fires when the run reaches the streak, once.
3. baseline_decline: one or more markers are notably worse than the patient's
                    own baseline, on the side that is worse for that marker
                    (fusion decides "notable"; `findings.WORSE` the side).
4. transcript_flag:  the clinical summary flags phrases in the transcript.
5. no_checkin:       no check-in for `no_checkin_days` (the sweep), once per gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from services.results.alerts.roster import RosterEntry
from shared.aws.history import HistoryReader
from shared.domain.clinics import AlertRules
from shared.domain.findings import PartialResultItem, ResultItem
from shared.domain.patients import ClinicPatientId, PatientKey
from shared.domain.stored_results import (
    MEDICATION_WORDS,
    MISSED_STATUSES,
    MarkerReading,
    checkin_time,
    markers,
    medication_status,
    parse_time,
    risk_level,
    stored_partial_result,
    transcript_flags,
)


@dataclass(frozen=True)
class AlertDraft:
    patient_id: ClinicPatientId
    rule: str
    severity: str
    title: str
    summary: str
    trigger: str  # what makes this alert one alert (the job, or the gap's start)
    triggered_at: str
    job_id: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)

# What `evaluate` reads of the patient's earlier results: the job, when, and the intake status (the
# missed-medication run). Read with a projection (`earlier_results`): a whole item is 30-80 KB, and
# RESULTS_ALERT_HISTORY of them were sent and parsed for these few fields.
ALERT_HISTORY_ATTRIBUTES = ("user_id", "timestamp", "analyzed_at", "job_id", "results.compliance.verification_status")


async def earlier_results(history: HistoryReader, item: ResultItem, limit: int) -> list[PartialResultItem]:
    """The patient's results before `item`, newest first, at most `limit`, holding what the rules read of
    them; one that does not parse is an InvalidStoredResult naming its job and field, never skipped."""
    return earlier_of(await read_alert_history(history, item.patient_key, limit), item, limit)


async def read_alert_history(history: HistoryReader, patient_key: PatientKey, limit: int) -> list[dict[str, Any]]:
    """What `earlier_results` reads, for a caller that starts the read before it has the new item (the results
    stage reads it beside fusion's document): the patient's newest `limit` + 1 results, projected (one more, in
    case the new item is among them)."""
    return await history.latest_projected(patient_key, ALERT_HISTORY_ATTRIBUTES, limit + 1)


def earlier_of(found: list[dict[str, Any]], item: ResultItem, limit: int) -> list[PartialResultItem]:
    """`earlier_results` of what `read_alert_history` found: `item` itself and anything not before it left out."""
    earlier = [stored_partial_result(i) for i in found if i.get("job_id") != item.job_id]
    return [i for i in earlier if i.timestamp < item.timestamp][:limit]


def evaluate(item: ResultItem, earlier: Sequence[ResultItem | PartialResultItem], rules: AlertRules
             ) -> list[AlertDraft]:
    """The alerts `item` (a stored result) raises, given the patient's `earlier` results."""
    patient_id, job_id, at = item.patient, item.job_id, item.timestamp
    results = item.results
    drafts: list[AlertDraft] = []

    def draft(rule: str, severity: str, title: str, summary: str, evidence: dict[str, Any]) -> None:
        drafts.append(AlertDraft(patient_id, rule, severity, title, summary, job_id or at, at, job_id, evidence))

    level = risk_level(item)
    if level and level in rules.risk_levels:
        fusion = results.multimodal_fusion
        evidence = ([e.stored() for e in fusion.risk_evidence] if fusion.risk_evidence
                    else [{"factor": f} for f in fusion.risk_factors or []])
        reasons = "; ".join(str(e.get("evidence") or e.get("factor")) for e in evidence[:3]) or "no factors listed"
        draft("risk", level, f"Risk level {level}", f"The check-in's risk level is {level}: {reasons}.",
              {"risk_level": level, "risk_evidence": evidence})

    if rules.missed_medication_streak and medication_status(item) in MISSED_STATUSES:
        run = [item]
        for previous in sorted(earlier, key=checkin_time, reverse=True):
            if medication_status(previous) not in MISSED_STATUSES:
                break
            run.append(previous)
        if len(run) == rules.missed_medication_streak:
            n = len(run)
            draft("missed_medication", "high", f"Medication not taken {n} check-in{'s' if n > 1 else ''} in a row",
                  f"The medication was seen not taken in the last {n} check-in{'s' if n > 1 else ''}.",
                  {"streak": n, "checkins": [{"job_id": r.job_id, "timestamp": r.timestamp,
                                              "status": MEDICATION_WORDS[medication_status(r) or "non_compliant"]}
                                             for r in run],
                   "reason": results.compliance.reason})

    if rules.baseline_decline:
        declines = [m for m in markers(item) if m.decline]
        if declines:
            names = ", ".join(m.label.lower() for m in declines)
            draft("baseline_decline", "moderate", "Decline from the patient's baseline",
                  f"Notably worse than the patient's usual: {names}.",
                  {"markers": [_decline_evidence(m) for m in declines]})

    if rules.transcript_flags:
        flags = transcript_flags(item)
        if flags:
            severity = "high" if any((f.severity if "severity" in f.model_fields_set else "high") == "high"
                                     for f in flags) else "moderate"
            draft("transcript_flag", severity, "Flagged phrase in the transcript",
                  f"{len(flags)} phrase{'s' if len(flags) > 1 else ''} flagged in what the patient said.",
                  {"flags": [f.stored() for f in flags]})
    return drafts


# the change rule that fired and its figures (fusion's change.py), shown when present
_CHANGE_FIGURES = ("rules_fired", "rci", "rci_threshold", "cusum", "cusum_threshold", "cusum_checkins")


def _decline_evidence(reading: MarkerReading) -> dict[str, Any]:
    baseline = reading.baseline
    return {"marker": reading.name, "label": reading.label, "value": reading.value, "unit": reading.unit,
            "baseline_mean": baseline.mean, "baseline_sd": baseline.sd, "z_score": baseline.z_score,
            "relative_change": baseline.relative_change, "direction": baseline.direction,
            "method": reading.marker.method,
            **{name: getattr(baseline, name) for name in _CHANGE_FIGURES if getattr(baseline, name) is not None}}


def missed_checkins(entries: list[RosterEntry], rules: AlertRules, now: datetime) -> list[AlertDraft]:
    if not rules.no_checkin_days:
        return []
    limit = timedelta(days=rules.no_checkin_days)
    drafts = []
    for entry in entries:
        if not entry.last_checkin_at:
            continue
        last = parse_time(entry.last_checkin_at)
        if now - last >= limit:
            days = (now - last).days
            drafts.append(AlertDraft(
                entry.patient_id, "no_checkin", "moderate", f"No check-in for {days} days",
                f"The last check-in was {days} days ago (the clinic's limit is {rules.no_checkin_days}).",
                trigger=entry.last_checkin_at, triggered_at=(last + limit).strftime("%Y-%m-%dT%H:%M:%SZ"),
                job_id=entry.last_job_id,
                evidence={"last_checkin_at": entry.last_checkin_at, "days": days, "limit_days": rules.no_checkin_days}))
    return drafts
