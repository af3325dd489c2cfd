"""Per-check-in options: which analyses run, and the clinic's thresholds for fusion.

Set on the check-in (`options` of `POST /api/v1/analyze`, of a patient link and of an
EHR event; `schizodot submit --analyses ... --threshold NAME=VALUE`), stored on the
job (`metadata.pipeline.options`) and honoured by every stage:

- ingest plans only the chosen modalities (`audio`, `vision`): one left out is
  skipped, with "not requested for this check-in" as the reason;
- audio transcribes only when `transcript` is chosen (and the deployment has a
  transcriber: `AUDIO_TRANSCRIPT_ENABLED`); left out, the transcript is "not
  requested for this check-in";
- fusion applies the thresholds given here instead of its `FUSION_*` defaults;
- the result shows what was asked and what was applied (`results.options`).

No options (or `analyses` left out) means the deployment's defaults: every
modality the recording has, the transcript where the deployment enables it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Analysis = Literal["audio", "vision", "transcript"]
ANALYSES: tuple[str, ...] = ("audio", "vision", "transcript")
NOT_REQUESTED = "not requested for this check-in"


class FusionThresholds(BaseModel):
    """The fusion thresholds a clinic may set per check-in (the same names and bounds as `FUSION_*`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    baseline_window: int | None = Field(None, ge=2, le=100, description="earlier check-ins the baseline is made of")
    baseline_min_checkins: int | None = Field(
        None, ge=2, le=100, description="earlier check-ins that must have measured a marker before it is compared")
    missed_medication_streak: int | None = Field(
        None, ge=2, le=100, description="check-ins in a row with the medication not taken that make a high risk")

    def given(self) -> dict[str, int]:
        return self.model_dump(exclude_none=True)


class CheckinOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    analyses: tuple[Analysis, ...] | None = Field(
        None, description="the analyses to run: audio, vision, transcript (null: the deployment's defaults)")
    thresholds: FusionThresholds = Field(default_factory=FusionThresholds)

    @field_validator("analyses")
    @classmethod
    def _sensible(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is None:
            return None
        if len(set(value)) != len(value):
            raise ValueError("each analysis may be named once")
        if not {"audio", "vision"} & set(value):
            raise ValueError("choose audio, vision or both")
        if "transcript" in value and "audio" not in value:
            raise ValueError("the transcript is made from the audio: choose audio with it")
        return tuple(a for a in ANALYSES if a in value)  # one order, whatever the caller's

    @model_validator(mode="after")
    def _window_holds_the_minimum(self) -> "CheckinOptions":
        t = self.thresholds
        if t.baseline_window and t.baseline_min_checkins and t.baseline_min_checkins > t.baseline_window:
            raise ValueError("thresholds: baseline_min_checkins cannot exceed baseline_window")
        return self

    def wants(self, analysis: str) -> bool:
        """Whether this check-in asks for `analysis` (True for every analysis when none are named)."""
        return self.analyses is None or analysis in self.analyses

    @property
    def is_default(self) -> bool:
        return self.analyses is None and not self.thresholds.given()

    def stored(self) -> dict[str, Any]:
        """The shape kept on the job (only what was set)."""
        return self.model_dump(mode="json", exclude_none=True, exclude_defaults=True)

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> "CheckinOptions":
        return cls.model_validate(stored or {})
