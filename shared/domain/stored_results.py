"""Reading a stored result (a SchizodotUsers item, shaped as issue 10 stores it)
for the console, the exports, the read API and the alert rules, in one place.

Markers travel in `results.vocal_markers` and `results.video_markers` in the
`shared.domain.markers` shape (assessed, value, unit, method, quality_flags, reason,
baseline). Keys are read as they come, so a marker added later shows up
without a change here; the tables below only give known ones a name and say
which direction is worse for the patient (None: no direction is worse, so a
change is shown but never called a decline).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from shared.domain.patients import PatientKey

MARKER_GROUPS = {"vocal_markers": "voice", "video_markers": "face"}

LABELS = {
    "speaking_fraction": "Speaking time", "pause_count": "Pauses", "pause_rate": "Pause rate",
    "mean_pause_duration": "Mean pause length", "speech_rate": "Speech rate", "pitch_mean": "Pitch (mean)",
    "pitch_variability": "Pitch variability", "intensity": "Loudness", "jitter": "Jitter", "shimmer": "Shimmer",
    "hnr": "Harmonics-to-noise ratio", "facial_expressivity": "Facial expressivity",
    "positive_expression_share": "Positive expressions", "head_movement": "Head movement",
    "face_in_view_share": "Face in view",
}

WORSE = {
    "speaking_fraction": "lower", "pause_count": "higher", "pause_rate": "higher", "mean_pause_duration": "higher",
    "speech_rate": "lower", "pitch_variability": "lower", "jitter": "higher", "shimmer": "higher", "hnr": "lower",
    "facial_expressivity": "lower", "positive_expression_share": "lower",
}

RISK_ORDER = {"low": 0, "moderate": 1, "high": 2}
MEDICATION_WORDS = {
    "compliant": "taken, seen on camera", "non_compliant": "not taken", "inconclusive": "could not be verified",
    "not_assessed": "not assessed",
    # a reviewer's verdict on the recorded dosing (services/results/dosing.py)
    "verified_by_review": "taken, confirmed by a reviewer of the video", "not_taken": "not taken (reviewer)",
    "unverifiable": "could not be told (reviewer)",
}
MISSED_STATUSES = frozenset({"non_compliant", "not_taken"})  # seen not taken, by the detector or a reviewer


@dataclass(frozen=True)
class MarkerReading:
    group: str  # vocal_markers | video_markers
    name: str
    marker: dict[str, Any]

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name.replace("_", " ").capitalize())

    @property
    def unit(self) -> str:
        return str(self.marker.get("unit") or "")

    @property
    def value(self) -> float | None:
        value = self.marker.get("value")
        assessed = self.marker.get("assessed", value is not None)
        return float(value) if assessed and isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def baseline(self) -> dict[str, Any]:
        return self.marker.get("baseline") or {}

    @property
    def decline(self) -> bool:
        """Notably worse than the patient's own baseline, on the side that is worse for this marker."""
        worse = WORSE.get(self.name)
        return bool(worse and self.baseline.get("notable") and self.baseline.get("direction") == worse)


def results_of(item: dict[str, Any]) -> dict[str, Any]:
    return item.get("results") or {}


def clinic_of(record: dict[str, Any]) -> str | None:
    """The clinic a stored result belongs to: its patient key's (`user_id`, clinic.patient), where the
    clinic is stored. Items from before the key carried it name it as `clinic_id` (or in `metadata`)."""
    key = record.get("user_id")
    keyed = PatientKey.parse(key).clinic_id if isinstance(key, str) and key else None
    return keyed or record.get("clinic_id") or (record.get("metadata") or {}).get("clinic_id")


def markers(item: dict[str, Any]) -> list[MarkerReading]:
    found = []
    results = results_of(item)
    for group in MARKER_GROUPS:
        for name, marker in (results.get(group) or {}).items():
            if isinstance(marker, dict) and "unit" in marker:
                found.append(MarkerReading(group, name, marker))
    return found


def risk_level(item: dict[str, Any]) -> str | None:
    level = (results_of(item).get("multimodal_fusion") or {}).get("risk_level")
    return level if level in RISK_ORDER else None


def medication_status(item: dict[str, Any]) -> str | None:
    return (results_of(item).get("compliance") or {}).get("verification_status")


def transcript_flags(item: dict[str, Any]) -> list[dict[str, Any]]:
    """`clinical_summary.flags`, each as a dict with at least `phrase` (strings are taken as the phrase)."""
    flags = []
    for flag in (results_of(item).get("clinical_summary") or {}).get("flags") or []:
        if isinstance(flag, str) and flag.strip():
            flags.append({"phrase": flag})
        elif isinstance(flag, dict) and str(flag.get("phrase") or flag.get("text") or "").strip():
            flags.append({**flag, "phrase": str(flag.get("phrase") or flag.get("text"))})
    return flags


def checkin_time(item: dict[str, Any]) -> datetime:
    """When the check-in was analysed (the item's sort key), as an aware UTC datetime."""
    return parse_time(item.get("timestamp") or item.get("analyzed_at") or "")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone)


def fmt_local(moment: datetime, zone: ZoneInfo) -> str:
    """'2026-11-30 13:05 CET' in the clinic's zone: the zone is always shown."""
    return local(moment, zone).strftime("%Y-%m-%d %H:%M %Z")
