"""Each marker against the patient's own earlier check-ins: the baseline block, and the
changes that are risk evidence.

Fusion reads (never writes) the patient's latest ``FUSION_BASELINE_WINDOW``
SchizodotUsers items, newest first. For every marker of this check-in
(``vocal_markers`` from audio, ``video_markers`` from vision, in the shape of
``shared.markers``) it attaches a ``baseline`` block (``shared.markers.Baseline``):

- the earlier values are those of the same marker, assessed, with the same unit
  and method (a changed method, e.g. words instead of syllables per minute,
  starts a new baseline); at least ``FUSION_BASELINE_MIN_CHECKINS`` are needed;
- ``mean`` and ``sd`` (sample standard deviation) of those values; ``z_score`` =
  (value - mean) / spread, where the spread is the sd but at least the marker's
  ``floor`` (its measurement error in bench/ and a change too small to matter, so
  a patient with very steady values does not turn noise into a change);
- ``notable``: the value lies outside the 95 % prediction interval of the
  patient's own values, |z| > t(0.975, n-1) x sqrt(1 + 1/n) for n earlier check-ins
  (4.97 spreads for 3 check-ins, 2.37 for 10): few false alarms while the history
  is short, sharper as it grows;
- ``relative_change`` = (value - mean) / |mean|, and ``direction`` when notable.

A notable change on the side the clinical literature associates with worsening
(``TRACKED``: less speaking time, more or longer pauses, slower speech, flatter
pitch, less facial expressivity ...) is risk evidence. Markers that measure one
thing count once: speaking time, pauses and speech rate are all speech
production, so however many of them changed they make one factor
(``speech_production_below_baseline``) whose evidence lists each. Other notable
changes are reported, not scored. A first check-in has no baseline and says so;
that alone raises nothing.

Medication: the check-ins in a row, this one included, with the medication seen
not taken; ``FUSION_MISSED_MEDICATION_STREAK`` or more is a high risk factor.
Runs of "inconclusive" (a detector was configured but could not see) are
reported, not scored.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from services.fusion.rules import RiskFactor
from services.fusion.settings import FusionSettings
from shared.markers import Baseline as BaselineBlock
from shared.markers import Marker, parse

MARKER_SECTIONS = ("vocal_markers", "video_markers")


@dataclass(frozen=True)
class Tracked:
    """How a marker's change is read. ``worse`` None: reported, never a risk factor."""

    words: str
    floor: float
    worse: str | None = None  # "lower" or "higher"
    factor: str | None = None
    severity: str | None = None


_SPEECH_PRODUCTION = "speech_production_below_baseline"
# Sources of the directions: Parola et al. 2020 (spoken time, speech rate, pauses),
# Cohen et al. 2014 (pauses), pitch variability (g = -0.55 across languages),
# AiCure 2022 (facial expressivity, head movement). The floors are at least the
# method's mean absolute error in bench/audio.py (README "Vocal markers").
TRACKED: Mapping[str, Tracked] = {
    "speaking_fraction": Tracked("speaking time", 3.0, "lower", _SPEECH_PRODUCTION, "moderate"),
    "pause_count": Tracked("number of pauses", 1.0),  # depends on how long the patient talked: see pause_rate
    "pause_rate": Tracked("pause rate", 2.0, "higher", _SPEECH_PRODUCTION, "moderate"),
    "mean_pause_duration": Tracked("mean pause length", 0.1, "higher", _SPEECH_PRODUCTION, "moderate"),
    "speech_rate": Tracked("speech rate", 10.0, "lower", _SPEECH_PRODUCTION, "moderate"),
    "pitch_mean": Tracked("pitch", 3.0),
    "pitch_variability": Tracked("pitch variability", 0.2, "lower", "pitch_variability_below_baseline", "moderate"),
    "intensity": Tracked("loudness", 1.0),  # depends on the microphone's distance and gain
    "jitter": Tracked("jitter", 0.15),
    "shimmer": Tracked("shimmer", 2.0),
    "hnr": Tracked("harmonics-to-noise ratio", 1.0),
    "facial_expressivity": Tracked("facial expressivity", 0.005, "lower", "expressivity_below_baseline", "moderate"),
    "positive_expression_share": Tracked("time with a positive expression", 5.0, "lower",
                                         "positive_expression_below_baseline", "low"),
    "head_movement": Tracked("head movement", 0.5, "lower", "head_movement_below_baseline", "low"),
    "face_in_view_share": Tracked("time with the face in view", 5.0),
}
_DEFAULT = Tracked("value", 0.0)

# t(0.975, df) for df = 1..30; beyond, 1.96 + 2.4 / df is within 0.003 of it up to df = 100.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def prediction_bound(n: int) -> float:
    """|z| beyond which a new value lies outside the 95 % prediction interval of n earlier values."""
    df = n - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df
    return t * math.sqrt(1 + 1 / n)


@dataclass
class Baseline:
    report: dict[str, Any]
    factors: list[RiskFactor] = field(default_factory=list)
    markers: dict[str, dict[str, dict]] = field(default_factory=dict)  # section -> name -> marker with baseline


def findings_of(audio: dict[str, Any] | None, vision: dict[str, Any] | None) -> dict[str, Any]:
    """This check-in's stage outputs in the shape of a SchizodotUsers item's `results`."""
    return {
        "vocal_markers": (audio or {}).get("vocal_markers") or {},
        "video_markers": (vision or {}).get("video_markers") or {},
        "compliance": (vision or {}).get("compliance") or {},
    }


def _marker(document: Any) -> Marker | None:
    if not isinstance(document, dict):
        return None
    try:
        return parse({k: v for k, v in document.items() if k != "baseline"})
    except (ValidationError, ValueError):  # markers of older versions (e.g. openSMILE's) are not comparable
        return None


def _status(results: dict[str, Any]) -> str | None:
    return (results.get("compliance") or {}).get("verification_status")


def _streak(statuses: list[str | None], counts) -> int:
    run = 0
    for status in statuses:
        if not counts(status):
            break
        run += 1
    return run


def marker_baseline(name: str, current: Marker, earlier: list[Marker], first_checkin: bool,
                    settings: FusionSettings) -> BaselineBlock:
    """The baseline block of one marker (see the module docstring)."""
    if first_checkin:
        return BaselineBlock(available=False, reason="first check-in: no earlier check-ins to compare with")
    if not current.assessed:
        return BaselineBlock(available=False, reason="not measured in this check-in")
    values = [m.value for m in earlier if m.assessed and m.unit == current.unit and m.method == current.method]
    if len(values) < settings.baseline_min_checkins:
        return BaselineBlock(available=False, checkins=len(values), reason=(
            f"measured the same way in {len(values)} earlier check-in(s); a baseline needs "
            f"{settings.baseline_min_checkins}"))
    tracked = TRACKED.get(name, _DEFAULT)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    z = (current.value - mean) / max(sd, tracked.floor, 1e-9)
    notable = abs(z) > prediction_bound(len(values))
    return BaselineBlock(
        available=True, checkins=len(values), mean=round(mean, 4), sd=round(sd, 4), z_score=round(z, 2),
        relative_change=round((current.value - mean) / abs(mean), 3) if mean else None,
        notable=notable, direction=("higher" if z > 0 else "lower") if notable else None,
    )


def compare(current: dict[str, Any], history: list[dict[str, Any]], settings: FusionSettings) -> Baseline:
    """`current` is shaped like an item's `results`; `history` holds earlier items, newest first."""
    earlier = [item for item in history if isinstance(item.get("results"), dict)][: settings.baseline_window]
    first = not earlier
    factors: list[RiskFactor] = []
    changes: list[str] = []
    notable: list[dict[str, Any]] = []
    markers: dict[str, dict[str, dict]] = {}
    for section in MARKER_SECTIONS:
        markers[section] = {}
        for name, document in (current.get(section) or {}).items():
            marker = _marker(document)
            if marker is None:  # not in the shared shape (an older stage): kept as it came, without a baseline
                markers[section][name] = document
                continue
            past = [m for item in earlier if (m := _marker((item["results"].get(section) or {}).get(name)))]
            block = marker_baseline(name, marker, past, first, settings)
            markers[section][name] = marker.model_copy(update={"baseline": block}).as_dict()
            if block.notable:
                text, factor = _change(name, marker, block)
                changes.append(text)
                notable.append({"marker": name, "section": section, "z_score": block.z_score,
                                "direction": block.direction, "risk_factor": factor.factor if factor else None})
                if factor:
                    factors.append(factor)
    factors = _one_per_kind(factors)

    statuses = [_status(current)] + [_status(item["results"]) for item in earlier]
    missed = _streak(statuses, lambda s: s == "non_compliant")
    inconclusive = _streak(statuses, lambda s: s == "inconclusive")
    if missed >= settings.missed_medication_streak:
        text = f"medication seen not taken in {missed} check-ins in a row"
        changes.append(text)
        factors.append(RiskFactor("repeated_missed_medication", "high", text))
    elif inconclusive >= settings.missed_medication_streak:
        changes.append(f"medication intake could not be verified in {inconclusive} check-ins in a row")
    report = {
        "available": not first,
        "reason": ("first check-in: there are no earlier results for this patient, so there is no baseline yet"
                   if first else None),
        "checkins_compared": len(earlier),
        "since": earlier[-1].get("timestamp") if earlier else None,
        "notable_changes": notable,
        "changes": changes,
        "missed_medication_streak": missed,
        "inconclusive_medication_streak": inconclusive,
        "previous_risk_levels": [(item["results"].get("multimodal_fusion") or {}).get("risk_level")
                                 for item in earlier[:5]],
    }
    return Baseline(report, factors, markers)


def _one_per_kind(factors: list[RiskFactor]) -> list[RiskFactor]:
    """Markers of one kind (e.g. speech production) make one factor, their evidence joined."""
    merged: dict[str, RiskFactor] = {}
    for f in factors:
        seen = merged.get(f.factor)
        merged[f.factor] = f if seen is None else RiskFactor(f.factor, f.severity, f"{seen.evidence}; {f.evidence}")
    return list(merged.values())


def _change(name: str, marker: Marker, block: BaselineBlock) -> tuple[str, RiskFactor | None]:
    """The notable change in words, and a risk factor when it is on the worse side of a tracked marker."""
    tracked = TRACKED.get(name, _DEFAULT)
    words = tracked.words if name in TRACKED else name.replace("_", " ")
    side = "below" if block.direction == "lower" else "above"
    text = (f"{words} {_fmt(marker.value)} {marker.unit}, {side} the patient's usual {_fmt(block.mean)} "
            f"(sd {_fmt(block.sd)}, z {block.z_score:+.1f}, {block.checkins} earlier check-ins)")
    if tracked.worse is not None and tracked.worse == block.direction:
        return text, RiskFactor(tracked.factor, tracked.severity, text)
    return text, None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
