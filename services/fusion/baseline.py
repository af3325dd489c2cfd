"""Change from the patient's own baseline: this check-in against their earlier ones.

Fusion reads (never writes) the patient's latest `FUSION_BASELINE_WINDOW`
SchizodotUsers items, newest first, and reports what changed:

1. Markers, each compared with the patient's own average over the earlier
   check-ins that measured it (at least `FUSION_BASELINE_MIN_CHECKINS` of them):
   - facial expressivity (`facial_emotion.expressivity.blendshape_activity`), lower is worse;
   - speech rate (`vocal_markers.speech_rate`), lower is worse;
   - pitch variability (`vocal_markers.f0_variability`), lower is worse.
   A marker that is `FUSION_BASELINE_CHANGE_FRACTION` or more of the average on
   its worse side is a change and a risk factor (expressivity and speech rate
   moderate, pitch variability low).
2. Medication: the number of check-ins in a row, this one included, where the
   medication was seen not taken; `FUSION_MISSED_MEDICATION_STREAK` or more is a
   high risk factor. A run of check-ins where intake could not be verified is
   reported as a change but is no risk factor on its own (every check-in is
   unverified until a pill detector is configured).
A first check-in has no baseline and says so; nothing is compared.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.fusion.rules import RiskFactor
from services.fusion.settings import FusionSettings


@dataclass(frozen=True)
class Marker:
    name: str
    words: str
    path: tuple[str, ...]
    worse: str  # "lower" or "higher"
    factor: str
    severity: str


TRACKED = (
    Marker("expressivity", "facial expressivity", ("facial_emotion", "expressivity", "blendshape_activity"),
           "lower", "expressivity_below_baseline", "moderate"),
    Marker("speech_rate", "speech rate", ("vocal_markers", "speech_rate", "value"),
           "lower", "speech_rate_below_baseline", "moderate"),
    Marker("pitch_variability", "pitch variability", ("vocal_markers", "f0_variability", "value"),
           "lower", "pitch_variability_below_baseline", "low"),
)


@dataclass
class Baseline:
    report: dict[str, Any]
    factors: list[RiskFactor] = field(default_factory=list)


def findings_of(audio: dict[str, Any] | None, vision: dict[str, Any] | None) -> dict[str, Any]:
    """This check-in's stage outputs in the shape of a SchizodotUsers item's `results`."""
    return {
        "vocal_markers": (audio or {}).get("vocal_markers") or {},
        "facial_emotion": (vision or {}).get("facial_emotion") or {},
        "compliance": (vision or {}).get("compliance") or {},
    }


def _value(results: dict[str, Any], path: tuple[str, ...]) -> float | None:
    node: Any = results
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return float(node) if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def _status(results: dict[str, Any]) -> str | None:
    return (results.get("compliance") or {}).get("verification_status")


def _streak(statuses: list[str | None], counts) -> int:
    run = 0
    for status in statuses:
        if not counts(status):
            break
        run += 1
    return run


def compare(current: dict[str, Any], history: list[dict[str, Any]], settings: FusionSettings) -> Baseline:
    """`current` is shaped like an item's `results`; `history` holds earlier items, newest first."""
    earlier = [item for item in history if isinstance(item.get("results"), dict)][: settings.baseline_window]
    if not earlier:
        return Baseline({
            "available": False,
            "reason": "first check-in: there are no earlier results for this patient, so there is no baseline yet",
            "checkins_compared": 0, "since": None, "comparisons": [], "changes": [],
            "missed_medication_streak": 1 if _status(current) == "non_compliant" else 0,
            "unverified_medication_streak": 1 if _status(current) != "compliant" else 0,
            "previous_risk_levels": [],
        })
    factors: list[RiskFactor] = []
    changes: list[str] = []
    comparisons = []
    for marker in TRACKED:
        values = [v for v in (_value(item["results"], marker.path) for item in earlier) if v is not None]
        now = _value(current, marker.path)
        entry: dict[str, Any] = {"marker": marker.name, "current": now, "baseline_checkins": len(values),
                                 "baseline_mean": None, "relative_change": None, "flagged": False, "note": None}
        comparisons.append(entry)
        if now is None:
            entry["note"] = "not measured in this check-in"
            continue
        if len(values) < settings.baseline_min_checkins:
            entry["note"] = (f"measured in {len(values)} earlier check-in(s); "
                             f"a baseline needs {settings.baseline_min_checkins}")
            continue
        mean = sum(values) / len(values)
        entry["baseline_mean"] = round(mean, 4)
        if mean <= 0:
            entry["note"] = "the patient's average is zero; no relative change can be computed"
            continue
        change = (now - mean) / mean
        entry["relative_change"] = round(change, 3)
        worse = -change if marker.worse == "lower" else change
        if round(worse, 6) >= settings.baseline_change_fraction:  # rounded: a change at the threshold counts
            entry["flagged"] = True
            side = "below" if marker.worse == "lower" else "above"
            text = (f"{marker.words} {abs(change):.0%} {side} the patient's own average "
                    f"({now:.3g} vs {mean:.3g} over {len(values)} earlier check-ins)")
            changes.append(text)
            factors.append(RiskFactor(marker.factor, marker.severity, text))

    statuses = [_status(current)] + [_status(item["results"]) for item in earlier]
    missed = _streak(statuses, lambda s: s == "non_compliant")
    unverified = _streak(statuses, lambda s: s != "compliant")
    if missed >= settings.missed_medication_streak:
        text = f"medication seen not taken in {missed} check-ins in a row"
        changes.append(text)
        factors.append(RiskFactor("repeated_missed_medication", "high", text))
    elif unverified >= settings.missed_medication_streak:
        changes.append(f"medication intake not verified in {unverified} check-ins in a row")
    return Baseline(
        {
            "available": True,
            "reason": None,
            "checkins_compared": len(earlier),
            "since": earlier[-1].get("timestamp"),
            "comparisons": comparisons,
            "changes": changes,
            "missed_medication_streak": missed,
            "unverified_medication_streak": unverified,
            "previous_risk_levels": [
                (item["results"].get("multimodal_fusion") or {}).get("risk_level") for item in earlier[:5]
            ],
        },
        factors,
    )
