"""The shape of every value the product reports about a patient.

Clinicians act on these numbers, so each one says what it is and how far it can
be trusted:

- ``assessed``: True only when the method that produced the value has measured
  validity (a published model with its accuracy, or our own measurement in
  ``bench/``) and the input was good enough to apply it. Otherwise the value is
  None and ``reason`` says why, in words a clinician understands. A reason about
  the deployment ("no validated speech-emotion model is configured") is never
  worded as a fact about the patient.
- ``unit``: always present, also when not assessed, so a reader knows what the
  field would hold ("%", "Hz", "semitones", "per min", "s", "dB", "ratio").
- ``method``: the algorithm or model, with its version where it has one.
- ``quality_flags``: conditions that weaken the reading without voiding it
  (``narrowband_audio``, ``low_snr``, ``short_speech``, ``face_small`` ...).
- ``baseline``: filled in by fusion, the patient's own history for this marker
  (``Baseline``).

Artifacts are JSON, so markers travel as plain dicts (``Marker.as_dict``); the
models here are the one definition of that shape and validate it on the way in.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Baseline(BaseModel):
    """This check-in's value against the patient's own earlier check-ins.

    ``available`` False means there is nothing to compare with yet (first
    check-ins, or the marker was not assessed before); ``reason`` says which.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    available: bool
    checkins: int = Field(0, ge=0, description="earlier check-ins that measured this marker")
    mean: float | None = None
    sd: float | None = None
    z_score: float | None = Field(None, description="(value - centre) / spread: the value in the patient's own spreads")
    relative_change: float | None = Field(None, description="(value - mean) / |mean|")
    notable: bool = False
    direction: str | None = Field(None, description="'lower' or 'higher' than the patient's usual")
    reason: str | None = None
    # The change rule's figures (services/fusion/change.py); absent in blocks written before it.
    rule: str | None = Field(None, description="the change rule and its settings")
    measurable: bool | None = Field(
        None, description="False: the recording failed the quality gate, so no change is judged (reason says why)")
    centre: float | None = Field(None, description="median of the earlier values")
    spread: float | None = Field(None, description="within-patient variability used, at least spread_floor")
    spread_floor: float | None = Field(None, description="the marker's measurement error (or least change that matters)")
    spread_floor_source: str | None = None
    rci: float | None = Field(None, description="reliable-change index of this check-in")
    rci_threshold: float | None = None
    cusum: float | None = Field(None, description="the larger one-sided CUSUM over the latest check-ins")
    cusum_threshold: float | None = None
    cusum_checkins: int | None = Field(None, ge=0, description="check-ins the CUSUM has been accumulating over")
    rules_fired: list[str] | None = Field(None, description="'reliable_change', 'sustained_drift'")

    @model_validator(mode="after")
    def _consistent(self) -> "Baseline":
        if not self.available and not self.reason:
            raise ValueError("a baseline that is not available needs a reason")
        if not self.available and self.notable:
            raise ValueError("a change cannot be notable without a baseline")
        if self.measurable is False and (self.notable or not self.reason):
            raise ValueError("a recording that is not measurable raises no change and says why")
        if self.notable and self.rules_fired is not None and not self.rules_fired:
            raise ValueError("a notable change names the rule that fired")
        return self


class Marker(BaseModel):
    """One measured value with its unit, method and quality, or why it was not measured."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    assessed: bool
    value: float | None = None
    unit: str = Field(min_length=1)
    method: str = Field(min_length=1)
    quality_flags: list[str] = Field(default_factory=list)
    reason: str | None = None
    baseline: Baseline | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "Marker":
        if self.assessed and self.value is None:
            raise ValueError("an assessed marker needs a value")
        if not self.assessed and self.value is not None:
            raise ValueError("a marker that was not assessed carries no value")
        if not self.assessed and not self.reason:
            raise ValueError("a marker that was not assessed needs a reason")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, mode="json") | {"value": self.value}


def measured(value: float, unit: str, method: str, quality_flags: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A finding: a value whose method has measured validity."""
    return Marker(assessed=True, value=float(value), unit=unit, method=method,
                  quality_flags=list(quality_flags)).as_dict()


def not_assessed(unit: str, method: str, reason: str,
                 quality_flags: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """No finding, and why: the input was not good enough, or no validated method is configured."""
    return Marker(assessed=False, unit=unit, method=method, reason=reason,
                  quality_flags=list(quality_flags)).as_dict()


def parse(document: dict[str, Any]) -> Marker:
    """A marker read back from an artifact or a stored result (raises ValueError when malformed)."""
    return Marker.model_validate(document)
