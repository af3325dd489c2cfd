"""Adherence by source: what each check-in says about the dose, and on what it rests.

One category per check-in, the strongest evidence first:
1. a reviewer's verdict on the video (`compliance.review`): verified_by_review, not_taken, unverifiable;
2. a pill detector's finding (`verification_status` compliant / non_compliant, only ever set by a
   configured detector): verified_by_detector, not_taken; inconclusive: unverifiable;
3. what the patient said (`compliance.self_report.classification`, from the medication prompt's
   transcript): reported_taken; missed or stopped: reported_missed. Never shown as observed intake;
4. otherwise not_assessed.

A streak counts check-ins in a row (newest first) whose dose was verified or reported taken, and
says how many of each: a reported dose is the patient's word, not an observation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from shared.domain.findings import Document, ResultItem
from shared.domain.patients import ClinicPatientId
from shared.domain.stored_results import checkin_time

CATEGORIES = ("verified_by_review", "verified_by_detector", "reported_taken", "reported_missed", "not_taken",
              "unverifiable", "not_assessed")
WORDS = {
    "verified_by_review": "taken, confirmed by a reviewer of the video",
    "verified_by_detector": "taken, seen by a validated pill detector",
    "reported_taken": "reported taken by the patient (not observed)",
    "reported_missed": "reported missed or stopped by the patient",
    "not_taken": "not taken",
    "unverifiable": "could not be verified",
    "not_assessed": "not assessed",
}
MARKS = {"verified_by_review": "✓", "verified_by_detector": "✓", "reported_taken": "R", "reported_missed": "R✗",
         "not_taken": "✗", "unverifiable": "?", "not_assessed": "–"}
VERIFIED = frozenset({"verified_by_review", "verified_by_detector"})
TAKEN = VERIFIED | {"reported_taken"}
REVIEW_CATEGORY = {"taken": "verified_by_review", "not_taken": "not_taken", "unverifiable": "unverifiable"}


def intake_of(item: ResultItem) -> str:
    compliance = item.results.compliance
    verdict = compliance.review.verdict if compliance.review else None
    if verdict in REVIEW_CATEGORY:
        return REVIEW_CATEGORY[verdict]
    status = compliance.verification_status
    if status == "compliant":
        return "verified_by_detector"
    if status == "non_compliant":
        return "not_taken"
    said = compliance.self_report.classification if compliance.self_report else None
    if said == "taken":
        return "reported_taken"
    if said in ("missed", "stopped"):
        return "reported_missed"
    if status == "inconclusive":
        return "unverifiable"
    return "not_assessed"


@dataclass(frozen=True)
class Streak:
    length: int
    verified: int
    reported: int
    words: str


def streak(items: Sequence[ResultItem]) -> Streak:
    """Check-ins in a row, newest first, with the dose verified or reported taken."""
    if not items:
        return Streak(0, 0, 0, "no check-ins")
    run = []
    for item in items:
        category = intake_of(item)
        if category not in TAKEN:
            break
        run.append(category)
    verified = sum(c in VERIFIED for c in run)
    reported = len(run) - verified
    if not run:
        latest = intake_of(items[0])
        missed = 0
        for item in items:
            if intake_of(item) != "not_taken":
                break
            missed += 1
        if missed:
            return Streak(0, 0, 0, f"not taken in the last {missed}")
        return Streak(0, 0, 0, f"0 (last: {WORDS[latest]})")
    basis = ", ".join(part for part in (f"{verified} verified" if verified else "",
                                        f"{reported} reported by the patient" if reported else "") if part)
    return Streak(len(run), verified, reported, f"{len(run)} in a row taken ({basis})")


@dataclass
class Adherence:
    patient_id: ClinicPatientId
    days: int
    since: str
    until: str
    counts: dict[str, int]
    checkins: list[dict[str, Any]] = field(default_factory=list)
    streak: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"patient_id": self.patient_id, "days": self.days, "since": self.since, "until": self.until,
                "counts": self.counts, "checkins": self.checkins, "streak": self.streak,
                "categories": WORDS}


def adherence(patient_id: ClinicPatientId, items: Sequence[ResultItem], days: int, now: datetime) -> Adherence:
    """Counts by source over the last `days` days (items newest first), each check-in with its category."""
    since = now - timedelta(days=days)
    within = [i for i in items if since <= checkin_time(i) <= now]
    categories = [intake_of(i) for i in within]
    counts = Counter(categories)
    run = streak(within)
    checkins = []
    for item, category in zip(within, categories):
        compliance = item.results.compliance
        review, said = compliance.review, compliance.self_report
        checkins.append({
            "job_id": item.job_id, "timestamp": item.timestamp, "intake": category,
            "words": WORDS[category], "verification_status": compliance.verification_status,
            "review": _picked(review, ("verdict", "reason", "by", "at", "revision")),
            "self_report": _picked(said, ("classification", "words", "method"))})
    return Adherence(patient_id, days, since.strftime("%Y-%m-%dT%H:%M:%SZ"), now.strftime("%Y-%m-%dT%H:%M:%SZ"),
                     {c: counts.get(c, 0) for c in CATEGORIES}, checkins,
                     {"length": run.length, "verified": run.verified, "reported": run.reported, "words": run.words})


def _picked(block: Document | None, names: tuple[str, ...]) -> dict[str, object] | None:
    """`names` of a stored block, as stored (None where the block is absent or empty, as the API shows it)."""
    stored = block.stored() if block is not None else {}
    return {name: stored.get(name) for name in names} if stored else None
