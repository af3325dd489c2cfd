"""Change that is real: one marker's value against the patient's own earlier values.

Two rules, each with a false-alert rate fixed in advance (``ChangeRule``), so a
steady patient is not alerted more often than that however short the history:

- **Within-patient variability** (``spread``): the mean absolute deviation of the
  earlier values from their median, times sqrt(pi/2) (the SD for normal data; an
  odd check-in weighs linearly, not squared as in the SD, and the median centre
  does not follow it; the median-of-deviations MAD needs a 3-4 times higher
  threshold with 5 check-ins for the same false alerts), never less than the
  marker's floor: its measured measurement error (``MeasurementError``, from
  ``python -m bench.audio --validity``) or the least change that matters, the
  larger (services/fusion/baseline.py ``spread_floor``). A patient with five
  near-identical check-ins therefore cannot turn the instrument's wobble into a change.
- **Reliable change** (one check-in; Jacobson & Truax 1991 style): the reliable-change
  index RCI = (value - median) / (spread x sqrt(1 + pi / 2n)), the difference over
  its standard error (the new value's spread and the n-value median's). It fires
  when |RCI| exceeds ``rci_threshold(n)``: the value a steady patient's RCI
  (values drawn from one normal distribution) exceeds on one side (e.g. a decline)
  with probability ``rule.rci_false_alerts``, simulated for each n because a
  spread estimated from few check-ins is itself uncertain (11.9 for 3 earlier
  check-ins, 3.4 for 10, towards 2.58 for long histories).
- **Sustained drift** (several check-ins): a two-sided CUSUM (Page 1954) over the
  latest ``rule.drift_checkins`` check-ins (this one included), each standardised
  against the older check-ins of the window (median and spread as above):
  S = max(0, S + z - k) upwards and max(0, S - z - k) downwards. It fires when the
  larger ends above ``cusum_threshold(...)``, the value a steady patient exceeds on
  one side with probability ``rule.cusum_false_alerts``. It catches a shift that
  no single check-in shows.

Risk (services/fusion/baseline.py) counts only the side of worsening, so a steady
patient raises a decline on a marker in at most rci + cusum false-alert rates of
check-ins. The settings were tuned with ``python -m bench.change``
(docs/change-detection.md): simulated histories, tuned on one seed and reported on another.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

NORMAL_MAE_TO_SD = math.sqrt(math.pi / 2)  # the mean absolute error of normal errors times this is their SD
_SIMULATED = 40_000  # steady histories per threshold (the 99.5 % quantile rests on 200 of them)
_SEED = 20260301

# The audio bench's stored figures (services/audio/markers.py reads the same file).
AUDIO_VALIDITY = Path(__file__).resolve().parents[1] / "audio" / "validity.json"


@dataclass(frozen=True)
class ChangeRule:
    """The rule's settings: false alerts per steady check-in for each test and each side (a decline
    is one side: fusion scores only the worse side), the CUSUM's span and slack."""

    rci_false_alerts: float = 0.005
    cusum_false_alerts: float = 0.015
    drift_checkins: int = 3
    cusum_slack: float = 0.5  # k, in spreads: half the one-spread shift it is tuned to catch
    min_reference: int = 3  # the CUSUM needs this many older check-ins to standardise against

    @property
    def name(self) -> str:
        return (f"robust baseline (median, mean absolute deviation floored by measurement error); reliable-change index "
                f"({self.rci_false_alerts:.1%} false alerts); CUSUM over {self.drift_checkins} check-ins, "
                f"k {self.cusum_slack} ({self.cusum_false_alerts:.1%} false alerts)")


RULE = ChangeRule()


@dataclass(frozen=True)
class MeasurementError:
    """A marker's measurement error as an SD, and where the figure comes from."""

    sd: float
    source: str


def measurement_errors(path: Path = AUDIO_VALIDITY) -> dict[str, MeasurementError]:
    """Each vocal marker's measurement error: the largest mean absolute error over the bench's
    recording conditions, as the SD of normal errors (MAE x sqrt(pi/2))."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    out = {}
    for name, conditions in (report.get("markers") or {}).items():
        rows = [(row["mae"], condition, row.get("measured", 0)) for condition, row in conditions.items()
                if isinstance(row, dict) and row.get("mae") is not None]
        if rows:
            mae, condition, n = max(rows)
            out[name] = MeasurementError(mae * NORMAL_MAE_TO_SD, (
                f"measurement error {mae * NORMAL_MAE_TO_SD:.3g} (mean absolute error {mae:.3g} x sqrt(pi/2), "
                f"{condition}, {n} recordings; {report.get('written_by', 'bench')})"))
    return out


def centre_and_spread(values: np.ndarray, floor: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise (one history a row) median, and spread: the mean absolute deviation from the median
    times sqrt(pi/2) (the SD for normal data), at least ``floor``."""
    centre = np.median(values, axis=-1)
    spread = NORMAL_MAE_TO_SD * np.mean(np.abs(values - centre[..., None]), axis=-1)
    return centre, np.maximum(np.maximum(spread, floor), 1e-12)


def _rci_scale(n: int) -> float:
    return math.sqrt(1 + math.pi / (2 * n))


@lru_cache(maxsize=None)
def rci_threshold(n: int, false_alerts: float) -> float:
    """The RCI a steady patient with n earlier check-ins exceeds on one side (a decline, say) with
    probability ``false_alerts`` (the spread not floored: the floor only makes alerts rarer)."""
    rng = np.random.default_rng(_SEED + n)
    centre, spread = centre_and_spread(rng.standard_normal((_SIMULATED, n)))
    rci = np.abs(rng.standard_normal(_SIMULATED) - centre) / spread / _rci_scale(n)
    return round(float(np.quantile(rci, 1 - 2 * false_alerts)), 2)


def two_sided_cusum(z: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upward CUSUM of z - k and downward of -z - k over the columns (oldest first), at the last
    column; and the run length of the larger (check-ins since it was last at 0)."""
    up = np.zeros(z.shape[0])
    down = np.zeros(z.shape[0])
    run_up = np.zeros(z.shape[0], dtype=int)
    run_down = np.zeros(z.shape[0], dtype=int)
    for column in z.T:
        up = np.maximum(0.0, up + column - k)
        down = np.maximum(0.0, down - column - k)
        run_up = np.where(up > 0, run_up + 1, 0)
        run_down = np.where(down > 0, run_down + 1, 0)
    return up, down, np.where(up >= down, run_up, run_down)


@lru_cache(maxsize=None)
def cusum_threshold(reference: int, recent: int, false_alerts: float, slack: float) -> float:
    """The one-sided CUSUM a steady patient exceeds with probability ``false_alerts`` (upwards; the
    same downwards), with ``recent`` check-ins standardised against ``reference`` older ones."""
    rng = np.random.default_rng(_SEED + 1000 * recent + reference)
    values = rng.standard_normal((_SIMULATED, reference + recent))
    centre, spread = centre_and_spread(values[:, :reference])
    up, down, _ = two_sided_cusum((values[:, reference:] - centre[:, None]) / spread[:, None], slack)
    return round(float(np.quantile(np.concatenate([up, down]), 1 - false_alerts)), 2)


@dataclass(frozen=True)
class Judged:
    """Many histories judged at once (one a row): what ``assess_many`` returns."""

    centre: np.ndarray
    spread: np.ndarray
    rci: np.ndarray
    rci_threshold: float
    reliable_change: np.ndarray
    cusum: np.ndarray | None
    cusum_up: np.ndarray | None
    cusum_threshold: float | None
    cusum_checkins: np.ndarray | None
    drift: np.ndarray


def assess_many(current: np.ndarray, earlier: np.ndarray, floor: float | np.ndarray,
                rule: "ChangeRule") -> Judged:
    """``current``: this check-in's values (histories); ``earlier``: (histories x n) earlier values,
    newest first. The one implementation of the rule: fusion judges one history, bench/change.py many."""
    n = earlier.shape[1]
    centre, spread = centre_and_spread(earlier, floor)
    rci = (current - centre) / (spread * _rci_scale(n))
    threshold = rci_threshold(n, rule.rci_false_alerts)
    reference = earlier[:, rule.drift_checkins - 1:]
    if reference.shape[1] < rule.min_reference:
        return Judged(centre, spread, rci, threshold, np.abs(rci) > threshold, None, None, None, None,
                      np.zeros(current.shape, dtype=bool))
    ref_centre, ref_spread = centre_and_spread(reference, floor)
    recent = np.concatenate([earlier[:, : rule.drift_checkins - 1][:, ::-1], current[:, None]], axis=1)
    up, down, run = two_sided_cusum((recent - ref_centre[:, None]) / ref_spread[:, None], rule.cusum_slack)
    statistic = np.maximum(up, down)
    limit = cusum_threshold(reference.shape[1], recent.shape[1], rule.cusum_false_alerts, rule.cusum_slack)
    return Judged(centre, spread, rci, threshold, np.abs(rci) > threshold, statistic, up >= down, limit, run,
                  statistic > limit)


@dataclass(frozen=True)
class Change:
    """One marker's value judged against its earlier values (see the module docstring)."""

    centre: float
    spread: float
    rci: float
    rci_threshold: float
    reliable_change: bool
    cusum: float | None = None
    cusum_threshold: float | None = None
    cusum_checkins: int | None = None
    drift: bool = False
    drift_direction: str | None = None

    @property
    def rules_fired(self) -> list[str]:
        return [name for name, fired in (("reliable_change", self.reliable_change), ("sustained_drift", self.drift))
                if fired]

    @property
    def direction(self) -> str | None:
        if self.reliable_change:
            return "higher" if self.rci > 0 else "lower"
        return self.drift_direction


def assess(value: float, earlier: list[float], floor: float, rule: ChangeRule = RULE) -> Change:
    """One marker of one check-in; ``earlier``: its earlier values, newest first (at least 2)."""
    j = assess_many(np.array([value], dtype=float), np.array([earlier], dtype=float), floor, rule)
    if j.cusum is None:
        return Change(float(j.centre[0]), float(j.spread[0]), float(j.rci[0]), j.rci_threshold,
                      bool(j.reliable_change[0]))
    drift = bool(j.drift[0])
    return Change(float(j.centre[0]), float(j.spread[0]), float(j.rci[0]), j.rci_threshold,
                  bool(j.reliable_change[0]), cusum=float(j.cusum[0]), cusum_threshold=j.cusum_threshold,
                  cusum_checkins=int(j.cusum_checkins[0]), drift=drift,
                  drift_direction=("higher" if j.cusum_up[0] else "lower") if drift else None)


def as_fields(change: Change) -> dict[str, Any]:
    """The figures for the marker's baseline block (shared.domain.markers.Baseline)."""
    return {"centre": round(change.centre, 4), "spread": round(change.spread, 4), "rci": round(change.rci, 2),
            "rci_threshold": change.rci_threshold,
            "cusum": None if change.cusum is None else round(change.cusum, 2),
            "cusum_threshold": change.cusum_threshold, "cusum_checkins": change.cusum_checkins,
            "rules_fired": change.rules_fired}
