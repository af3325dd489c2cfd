"""Reading a stored result (a SchizodotUsers item, shaped as issue 10 stores it)
for the console, the exports, FHIR, the read API and the alert rules, in one place.

An item is parsed once where it is read (`stored_result`: the item as `ResultItem`, or an
`InvalidStoredResult` naming the job and each wrong field); everything below reads the model.

Markers travel in `results.vocal_markers` and `results.video_markers` in the
`shared.domain.markers` shape (assessed, value, unit, method, quality_flags, reason,
baseline). Keys are read as they come, so a marker added later shows up
without a change here; the tables below only give known ones a name and say
which direction is worse for the patient (None: no direction is worse, so a
change is shown but never called a decline).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from shared.domain.errors import InvalidStoredResult
from shared.domain.findings import (
    DocumentT,
    MarkerBaseline,
    MarkerValue,
    PartialResultItem,
    ResultItem,
    SummaryFlag,
    parse_document,
)

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


def stored_result(item: Mapping[str, object]) -> ResultItem:
    """A SchizodotUsers item as read back (shared.aws.history), parsed once. One that does not parse is
    our data gone wrong, never skipped: an InvalidStoredResult naming the job and each wrong field."""
    return _parsed(ResultItem, item)


def stored_partial_result(item: Mapping[str, object]) -> PartialResultItem:
    """An item read with a projection (`HistoryReader.latest_projected`: the attributes a reader named),
    parsed once, as `stored_result` parses a whole one."""
    return _parsed(PartialResultItem, item)


def _parsed(model: type[DocumentT], item: Mapping[str, object]) -> DocumentT:
    job = item.get("job_id") if isinstance(item, Mapping) else None
    return parse_document(model, item, f"the stored result of {job if isinstance(job, str) else 'a job'}",
                          InvalidStoredResult)


NO_BASELINE = MarkerBaseline()


@dataclass(frozen=True)
class MarkerReading:
    group: str  # vocal_markers | video_markers (answers: an answer's markers)
    name: str
    marker: MarkerValue

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name.replace("_", " ").capitalize())

    @property
    def unit(self) -> str:
        return self.marker.unit or ""

    @property
    def value(self) -> float | None:
        value = self.marker.value
        assessed = self.marker.assessed if "assessed" in self.marker.model_fields_set else value is not None
        return float(value) if assessed and isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def baseline(self) -> MarkerBaseline:
        return self.marker.baseline or NO_BASELINE

    @property
    def decline(self) -> bool:
        """Notably worse than the patient's own baseline, on the side that is worse for this marker."""
        worse = WORSE.get(self.name)
        return bool(worse and self.baseline.notable and self.baseline.direction == worse)


def markers(item: ResultItem) -> list[MarkerReading]:
    """The item's markers that carry a unit (every marker in shared.domain.markers' shape does)."""
    found = []
    for group in MARKER_GROUPS:
        for name, marker in (getattr(item.results, group) or {}).items():
            if "unit" in marker.model_fields_set:
                found.append(MarkerReading(group, name, marker))
    return found


def risk_level(item: ResultItem) -> str | None:
    level = item.results.multimodal_fusion.risk_level
    return level if level in RISK_ORDER else None


def medication_status(item: ResultItem | PartialResultItem) -> str | None:
    compliance = item.results.compliance if item.results else None  # a projected item may hold no results
    return compliance.verification_status if compliance else None


def transcript_flags(item: ResultItem) -> list[SummaryFlag]:
    """`clinical_summary.flags`, each with its `phrase` (a string is taken as the phrase, as is an older
    flag's `text`); blank ones left out."""
    flags = []
    for flag in item.results.clinical_summary.flags or []:
        if isinstance(flag, str):
            if flag.strip():
                flags.append(SummaryFlag(phrase=flag))
        elif str(flag.phrase or flag.text or "").strip():
            flags.append(flag if flag.phrase else flag.model_copy(update={"phrase": str(flag.text)}))
    return flags


def checkin_time(item: ResultItem | PartialResultItem) -> datetime:
    """When the check-in was analysed (the item's sort key), as an aware UTC datetime."""
    return parse_time(item.timestamp or item.analyzed_at or "")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def local(moment: datetime, zone: ZoneInfo) -> datetime:
    return moment.astimezone(zone)


def fmt_local(moment: datetime, zone: ZoneInfo) -> str:
    """'2026-11-30 13:05 CET' in the clinic's zone: the zone is always shown."""
    return local(moment, zone).strftime("%Y-%m-%d %H:%M %Z")
