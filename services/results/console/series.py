"""The time series the console's plots and the PDF report draw, in one place.

Times are the clinic's local wall-clock times (the axis is labelled with the
zone); a marker's band is its baseline at each check-in (mean ± 1 SD of the
patient's earlier check-ins, as fusion computed it), absent until a baseline
exists.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from shared.domain.findings import ResultItem
from shared.domain.stored_results import RISK_ORDER, checkin_time, markers, risk_level

RISK_LABELS = ["low", "moderate", "high"]


@dataclass
class Series:
    key: str
    label: str
    unit: str
    times: list[datetime] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    band_times: list[datetime] = field(default_factory=list)
    band_low: list[float] = field(default_factory=list)
    band_high: list[float] = field(default_factory=list)
    notable_times: list[datetime] = field(default_factory=list)
    notable_values: list[float] = field(default_factory=list)
    method: str = ""
    not_assessed: int = 0
    reasons: set[str] = field(default_factory=set)

    @property
    def has_data(self) -> bool:
        return bool(self.values)


@dataclass
class RiskSeries:
    times: list[datetime]
    levels: list[int]
    words: list[str]
    factors: list[str]
    job_ids: list[str]


def risk_series(items_oldest_first: Sequence[ResultItem], zone: ZoneInfo) -> RiskSeries:
    series = RiskSeries([], [], [], [], [])
    for item in items_oldest_first:
        level = risk_level(item)
        if level is None:
            continue
        factors = item.results.multimodal_fusion.risk_factors or []
        series.times.append(checkin_time(item).astimezone(zone).replace(tzinfo=None))
        series.levels.append(RISK_ORDER[level])
        series.words.append(level)
        series.factors.append(", ".join(f.replace("_", " ") for f in factors) or "none")
        series.job_ids.append(item.job_id)
    return series


def marker_series(items_oldest_first: Sequence[ResultItem], zone: ZoneInfo) -> list[Series]:
    """One series per marker (keyed by name and unit: a unit change starts a new series)."""
    found: dict[tuple[str, str], Series] = {}
    for item in items_oldest_first:
        when = checkin_time(item).astimezone(zone).replace(tzinfo=None)
        for reading in markers(item):
            series = found.setdefault((reading.name, reading.unit),
                                      Series(reading.name, reading.label, reading.unit))
            series.method = reading.marker.method or series.method
            if reading.value is None:
                series.not_assessed += 1
                if reading.marker.reason:
                    series.reasons.add(reading.marker.reason)
                continue
            series.times.append(when)
            series.values.append(reading.value)
            baseline = reading.baseline
            if baseline.available and baseline.mean is not None and baseline.sd is not None:
                series.band_times.append(when)
                series.band_low.append(float(baseline.mean) - float(baseline.sd))
                series.band_high.append(float(baseline.mean) + float(baseline.sd))
            if baseline.notable:
                series.notable_times.append(when)
                series.notable_values.append(reading.value)
    return list(found.values())
