"""The check-in's timeline: when each prompt and dosing step was shown to the patient.

The patient page records, for every prompt and observed-dosing step, the moment it
appeared on screen, in milliseconds from the start of the recording, and sends the
list with the recording. Clinic apps that guide their own recording send the same
`timeline` with `POST /api/v1/analyze` or an EHR event.

    [{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
     {"step_id": "medication", "kind": "prompt", "shown_at_ms": 9400},
     ...
     {"step_id": "show_pill", "kind": "dosing", "shown_at_ms": 51200}, ...]

It is validated once, where it enters (`CheckinTimeline`: a 422 with the reason for a
malformed list), and kept on the job as given (`metadata.pipeline.timeline`). Each
step's window runs from its own moment to the next step's (the last one to the end of
the recording): `windows` computes them once the recording's length is known. A step
shown after the recording ended is dropped from the windows and flagged, and a window
reaching past the end is clipped to it and flagged; the flags travel with the
findings so that a clinician sees why a step has no evidence.

A check-in without a timeline works as before and says so (`NO_TIMELINE_REASON`).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

MAX_TIMELINE_STEPS = 60  # 20 prompts and 10 dosing steps fit twice over
MAX_SHOWN_AT_MS = 3_600_000  # an hour: far beyond any recording limit

StepKind = Literal["prompt", "dosing"]
NO_TIMELINE_REASON = ("this check-in carries no timeline (when each question and dosing step was shown), "
                      "so its findings cover the whole recording")


class TimelineEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step_id: str = Field(pattern=r"^[a-z0-9_]{1,40}$", description="the prompt's or dosing step's id in the script")
    kind: StepKind = Field(description="prompt (a question) or dosing (an observed-dosing step)")
    shown_at_ms: int = Field(ge=0, le=MAX_SHOWN_AT_MS,
                             description="when the step appeared, in ms from the start of the recording")


class CheckinTimeline(BaseModel):
    """The steps in the order they were shown; times never go backwards, each step once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    entries: tuple[TimelineEntry, ...] = Field(min_length=1, max_length=MAX_TIMELINE_STEPS)

    @model_validator(mode="after")
    def _ordered(self) -> "CheckinTimeline":
        seen: set[str] = set()
        for previous, entry in zip((None, *self.entries), self.entries):
            if previous is not None and entry.shown_at_ms < previous.shown_at_ms:
                raise ValueError(f"timeline steps out of order: {entry.step_id!r} at {entry.shown_at_ms} ms "
                                 f"comes after {previous.step_id!r} at {previous.shown_at_ms} ms")
            if entry.step_id in seen:
                raise ValueError(f"timeline step {entry.step_id!r} appears more than once")
            seen.add(entry.step_id)
        return self

    @classmethod
    def of(cls, stored: list[dict] | None) -> "CheckinTimeline | None":
        """The timeline kept on a job (a list of entries), or None where the check-in had none."""
        return cls(entries=tuple(stored)) if stored else None

    def stored(self) -> list[dict]:
        return [entry.model_dump() for entry in self.entries]


class StepWindow(BaseModel):
    model_config = ConfigDict(frozen=True)

    step_id: str
    kind: StepKind
    start_s: float
    end_s: float
    clipped: bool = False  # the window reached past the recording's end and was cut there


class TimelineWindows(BaseModel):
    model_config = ConfigDict(frozen=True)

    windows: tuple[StepWindow, ...]
    flags: tuple[str, ...] = ()  # in words: steps clipped or dropped at the recording's end

    def of_kind(self, kind: StepKind) -> tuple[StepWindow, ...]:
        return tuple(window for window in self.windows if window.kind == kind)

    def get(self, step_id: str) -> StepWindow | None:
        return next((window for window in self.windows if window.step_id == step_id), None)

    def span(self, first_step: str, last_step: str) -> tuple[float, float] | None:
        """From the start of `first_step`'s window to the end of `last_step`'s, where both were shown."""
        first, last = self.get(first_step), self.get(last_step)
        return (first.start_s, last.end_s) if first and last and first.start_s <= last.end_s else None


def windows(timeline: CheckinTimeline, duration_s: float) -> TimelineWindows:
    """Each step's window within a recording of `duration_s` seconds."""
    kept: list[StepWindow] = []
    flags: list[str] = []
    entries = timeline.entries
    for index, entry in enumerate(entries):
        start = entry.shown_at_ms / 1000.0
        if start >= duration_s:
            flags.append(f"step {entry.step_id!r} was shown at {start:.1f} s, after the recording ended "
                         f"({duration_s:.1f} s): no window")
            continue
        end = entries[index + 1].shown_at_ms / 1000.0 if index + 1 < len(entries) else duration_s
        clipped = end > duration_s
        if clipped:
            flags.append(f"step {entry.step_id!r} ran past the recording's end: its window is cut at "
                         f"{duration_s:.1f} s")
        kept.append(StepWindow(step_id=entry.step_id, kind=entry.kind, start_s=round(start, 3),
                               end_s=round(min(end, duration_s), 3), clipped=clipped))
    return TimelineWindows(windows=tuple(kept), flags=tuple(flags))



def _checked(entries: list[TimelineEntry]) -> CheckinTimeline:
    try:
        return CheckinTimeline(entries=tuple(entries))
    except ValidationError as error:  # the order rules, in their own words
        raise ValueError("; ".join(item["msg"].removeprefix("Value error, ") for item in error.errors())) from None


# A request field holding a timeline: given and answered as the list of entries (errors name
# `timeline.<index>.<field>`), validated whole as a CheckinTimeline and handed on as one.
TimelineField = Annotated[list[TimelineEntry], Field(min_length=1, max_length=MAX_TIMELINE_STEPS),
                          BeforeValidator(lambda v: list(v.entries) if isinstance(v, CheckinTimeline) else v),
                          AfterValidator(_checked),
                          PlainSerializer(lambda timeline: timeline.stored(), return_type=list)]
