"""Each marker against the patient's own earlier check-ins: the baseline block, and the
changes that are risk evidence.

Fusion reads (never writes) the patient's latest ``FUSION_BASELINE_WINDOW``
SchizodotUsers items, newest first. For every marker of this check-in
(``vocal_markers`` from audio, ``video_markers`` from vision, and each answer's
markers in ``answers``, in the shape of ``shared.domain.markers``) it attaches a
``baseline`` block (``shared.domain.markers.Baseline``):

- the earlier values are those of the same marker (for an answer: of the answer
  to the same prompt, ``step_id``), assessed, with the same unit and method (a
  changed method, e.g. words instead of syllables per minute, starts a new
  baseline); at least ``FUSION_BASELINE_MIN_CHECKINS`` are needed;
- ``mean`` and ``sd`` of those values (the console's usual band); the change
  itself is judged by ``services/fusion/change.py``: a robust within-patient spread
  floored by the marker's measured measurement error (``spread_floor``, from
  ``python -m bench.audio --validity``; for markers without a measured error, the
  least change that matters, named as such), a reliable change in this check-in
  (RCI beyond its threshold) or a sustained drift over the latest check-ins (CUSUM
  beyond its threshold). ``notable`` says one fired, ``rules_fired`` which, with
  the figures beside them; ``z_score`` is the value in spreads from the median;
- **quality gate** (vocal markers and answers): a recording with too little voiced
  speech, too noisy, clipped, or made with another device or sample rate than the
  baseline's check-ins is "not measurable": its blocks say why (``measurable``
  False), no change is judged and nothing is raised. Its values are no baseline
  for later check-ins either; a changed device starts a new baseline: later
  check-ins are compared only with check-ins recorded the same way.

A notable change on the side the clinical literature associates with worsening
(``TRACKED``: less speaking time, more or longer pauses, slower speech, flatter
pitch, less facial expressivity ...) is risk evidence, named with its rule and
figures. Markers that measure one thing count once: speaking time, pauses and
speech rate are all speech production, so however many of them changed they make
one factor (``speech_production_below_baseline``) whose evidence lists each.
Other notable changes, and the per-answer ones (no measured error per answer
yet), are reported, not scored. A first check-in has no baseline and says so;
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

import structlog
from pydantic import ValidationError

from services.fusion import change as change_rule
from services.fusion.rules import RiskFactor
from services.fusion.settings import FusionSettings
from shared.domain.errors import InvalidStoredResult
from shared.domain.findings import (
    Answer,
    Answers,
    AudioFindings,
    AudioQuality,
    Markers,
    PartialResultItem,
    PartialResults,
    RecordingSource,
    VisionFindings,
)
from shared.domain.markers import Baseline as BaselineBlock
from shared.domain.markers import Marker, parse
from shared.domain.stored_results import stored_partial_result

log = structlog.get_logger()
MARKER_SECTIONS = ("vocal_markers", "video_markers")
GATED_SECTIONS = ("vocal_markers",)  # the audio quality gate applies to these (and to the answers)
# What the baseline reads of the patient's earlier items (`HistoryReader.latest_projected`): the markers,
# the answers' markers, how the sound was recorded, the intake status and the risk level. Not the
# transcript, the facial emotion's timeline or the dosing evidence, most of a stored item's bytes.
HISTORY_ATTRIBUTES = ("user_id", "timestamp", "job_id", *(f"results.{section}" for section in MARKER_SECTIONS),
                      "results.answers", "results.audio_quality", "results.compliance.verification_status",
                      "results.multimodal_fusion.risk_level")


@dataclass(frozen=True)
class Tracked:
    """How a marker's change is read. ``least_change``: the spread's floor where the marker has no
    measured error (a change smaller than this does not matter). ``worse`` None: reported, never a risk factor."""

    words: str
    least_change: float
    worse: str | None = None  # "lower" or "higher"
    factor: str | None = None
    severity: str | None = None


_SPEECH_PRODUCTION = "speech_production_below_baseline"
# Sources of the directions: Parola et al. 2020 (spoken time, speech rate, pauses),
# Cohen et al. 2014 (pauses), pitch variability (g = -0.55 across languages),
# AiCure 2022 (facial expressivity, head movement). The vocal markers' floors are
# their measured error (services/fusion/change.py); least_change is used only without one.
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
# The markers of each answer (audio's `answers`): reported against the same prompt's earlier answers, never scored.
ANSWER_TRACKED: Mapping[str, Tracked] = {
    "response_latency": Tracked("response latency", 0.25),
    "speaking_time": Tracked("speaking time", 1.0),
    "speaking_fraction": Tracked("speaking time", 3.0),
    "pause_count": Tracked("number of pauses", 1.0),
    "pause_rate": Tracked("pause rate", 2.0),
    "speech_rate": Tracked("speech rate", 10.0),
    "word_count": Tracked("words", 2.0),
    "mean_length_of_utterance": Tracked("mean length of utterance", 1.0),
    "mattr": Tracked("lexical diversity (MATTR)", 0.02),
}
_DEFAULT = Tracked("value", 0.0)
ERRORS: Mapping[str, change_rule.MeasurementError] = change_rule.measurement_errors()

# t(0.975, df) for df = 1..30; beyond, 1.96 + 2.4 / df is within 0.003 of it up to df = 100.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def prediction_bound(n: int) -> float:
    """|z| beyond which a new value lies outside the 95 % prediction interval of n earlier values:
    the rule before issue 21, kept for bench/change.py's side-by-side comparison."""
    df = n - 1
    t = _T975[df - 1] if df <= len(_T975) else 1.96 + 2.4 / df
    return t * math.sqrt(1 + 1 / n)


def spread_floor(name: str, tracked: Tracked) -> tuple[float, str]:
    """The spread's floor: the larger of the marker's measured error and its least change that matters
    (the bench's errors are measured on synthetic speech, a lower bound for a patient's recordings)."""
    measured = ERRORS.get(name)
    if measured is None:
        return tracked.least_change, f"least change that matters ({tracked.least_change:g}; no measured error)"
    if measured.sd >= tracked.least_change:
        return measured.sd, measured.source
    return tracked.least_change, (f"least change that matters ({tracked.least_change:g}), above the "
                                  f"{measured.source}")


@dataclass
class Baseline:
    report: dict[str, Any]
    factors: list[RiskFactor] = field(default_factory=list)
    markers: dict[str, dict[str, dict]] = field(default_factory=dict)  # section -> name -> marker with baseline
    answers: dict[str, Any] | None = None  # audio's `answers`, each answer's markers with their baseline


def findings_of(audio: AudioFindings | None, vision: VisionFindings | None) -> PartialResults:
    """This check-in's stage outputs in the shape of a SchizodotUsers item's `results`, the shape
    `compare` reads the patient's earlier items in (an empty block reads as none, as it always has)."""
    quality = audio.audio_quality if audio else None
    answers = audio.answers if audio else None
    return PartialResults(
        vocal_markers=(audio.vocal_markers if audio else None) or {},
        video_markers=(vision.video_markers if vision else None) or {},
        compliance=vision.compliance if vision else None,
        audio_quality=quality if quality is not None and quality.stored() else None,
        answers=answers if answers is not None and answers.stored() else None,
    )


def earlier_results(items: list[dict[str, Any]], job_id: str, window: int) -> list[PartialResultItem]:
    """The patient's earlier items as read (`HISTORY_ATTRIBUTES`, newest first), parsed once here, without
    this job's own (a redelivery after results ran) and at most `window` of them. An item that does not
    parse (not written by this version's results stage) is left out of the baseline, and logged."""
    parsed = []
    for item in items:
        if item.get("job_id") == job_id:
            continue
        try:
            parsed.append(stored_partial_result(item))
        except InvalidStoredResult as error:  # names the job and the fields, never a value
            log.warning("an earlier result left out of the baseline", problem=str(error))
    return parsed[:window]


def _marker(document: Any) -> Marker | None:
    if not isinstance(document, dict):
        return None
    try:
        return parse({k: v for k, v in document.items() if k != "baseline"})
    except (ValidationError, ValueError):  # markers of older versions (e.g. openSMILE's) are not comparable
        return None


def _status(results: PartialResults) -> str | None:
    return results.compliance.verification_status if results.compliance else None


def _section(results: PartialResults, section: str) -> Markers:
    return (results.vocal_markers if section == "vocal_markers" else results.video_markers) or {}


def _streak(statuses: list[str | None], counts) -> int:
    run = 0
    for status in statuses:
        if not counts(status):
            break
        run += 1
    return run


# --- the quality gate -------------------------------------------------------------------


def _source(results: PartialResults) -> RecordingSource | None:
    """How a check-in's sound was recorded (audio's `audio_quality.source`), when known."""
    source = results.audio_quality.source if results.audio_quality else None
    return source if source is not None and source.sample_rate_hz else None


def _same_recording(a: RecordingSource, b: RecordingSource) -> bool:
    return (a.sample_rate_hz or None, a.channels or None, a.codec or None, a.device or None) == \
        (b.sample_rate_hz or None, b.channels or None, b.codec or None, b.device or None)


def _described(source: RecordingSource) -> str:
    words = f"{source.sample_rate_hz} Hz, {source.channels or '?'} channel(s), {source.codec or '?'}"
    return words + (f", {source.device}" if source.device else "")


def recording_problems(quality: AudioQuality | None, settings: FusionSettings) -> list[str]:
    """What makes a recording's sound not measurable in itself: too little voiced speech, noise, clipping."""
    if quality is None:
        return []  # an audio stage that does not report its quality: nothing to gate on
    why = []
    voiced = quality.voiced_seconds
    if voiced is not None and voiced < settings.quality_min_voiced_seconds:
        why.append(f"only {voiced:.1f} s of voiced speech (at least {settings.quality_min_voiced_seconds:g} s needed)")
    snr = quality.snr_db
    if snr is not None and snr < settings.quality_min_snr_db:
        why.append(f"speech only {snr:.0f} dB above the background (at least {settings.quality_min_snr_db:g} dB "
                   "needed)")
    clipped = quality.clipped_fraction
    if clipped is not None and clipped > settings.quality_max_clipped_fraction:
        why.append(f"clipped ({100 * clipped:.1f} % of speech samples at full scale)")
    return why


def quality_gate(current: PartialResults, earlier: list[PartialResults], settings: FusionSettings) -> str | None:
    """Why this check-in's sound is not measurable against the patient's baseline, or None when it is.
    `earlier`: the baseline's items' `results`."""
    why = recording_problems(current.audio_quality, settings)
    source = _source(current)
    known = [s for item in earlier if (s := _source(item))]
    if source and known and not any(_same_recording(source, s) for s in known):
        why.append(f"recorded differently ({_described(source)}) from the baseline's check-ins "
                   f"({_described(known[0])}); a new baseline starts with this recording")
    return "not measurable: " + "; ".join(why) if why else None


def _recorded_alike(current: PartialResults, earlier: list[PartialResults],
                    settings: FusionSettings) -> list[PartialResults]:
    """The earlier check-ins whose sound can be compared with this one's: recorded the same way (or not
    known) and measurable themselves (a noisy or clipped check-in's values are no baseline)."""
    source = _source(current)
    return [results for results in earlier
            if not recording_problems(results.audio_quality, settings)
            and (not source or not (s := _source(results)) or _same_recording(source, s))]


# --- one marker ------------------------------------------------------------------------


def marker_baseline(name: str, current: Marker, earlier: list[Marker], first_checkin: bool,
                    settings: FusionSettings, tracked: Tracked | None = None,
                    not_measurable: str | None = None) -> BaselineBlock:
    """The baseline block of one marker (see the module docstring). `earlier`: newest first."""
    if first_checkin:
        return BaselineBlock(available=False, reason="first check-in: no earlier check-ins to compare with")
    if not current.assessed:
        return BaselineBlock(available=False, reason="not measured in this check-in")
    values = [m.value for m in earlier if m.assessed and m.unit == current.unit and m.method == current.method]
    if len(values) < settings.baseline_min_checkins:
        return BaselineBlock(available=False, checkins=len(values), measurable=False if not_measurable else None,
                             reason=not_measurable or (
                                 f"measured the same way in {len(values)} earlier check-in(s); a baseline needs "
                                 f"{settings.baseline_min_checkins}"))
    tracked = tracked or TRACKED.get(name, _DEFAULT)
    mean = statistics.fmean(values)
    sd = statistics.stdev(values)
    usual = {"available": True, "checkins": len(values), "mean": round(mean, 4), "sd": round(sd, 4),
             "relative_change": round((current.value - mean) / abs(mean), 3) if mean else None}
    if not_measurable:
        return BaselineBlock(**usual, measurable=False, reason=not_measurable)
    floor, source = spread_floor(name, tracked)
    judged = change_rule.assess(current.value, values, floor)
    fired = judged.rules_fired
    return BaselineBlock(
        **usual, z_score=round((current.value - judged.centre) / judged.spread, 2),
        notable=bool(fired), direction=judged.direction if fired else None,
        rule=change_rule.RULE.name, measurable=True, spread_floor=round(floor, 4), spread_floor_source=source,
        **change_rule.as_fields(judged),
    )


def _judge(document: Any, past_documents: list[Any], name: str, first: bool, settings: FusionSettings,
           tracked: Tracked | None = None, not_measurable: str | None = None
           ) -> tuple[Any, Marker | None, BaselineBlock | None]:
    """A marker document with its baseline block (as it came when not in the shared shape)."""
    marker = _marker(document)
    if marker is None:  # not in the shared shape (an older stage): kept as it came, without a baseline
        return document, None, None
    past = [m for d in past_documents if (m := _marker(d))]
    block = marker_baseline(name, marker, past, first, settings, tracked, not_measurable)
    return marker.model_copy(update={"baseline": block}).as_dict(), marker, block


def compare(current: PartialResults, history: list[PartialResultItem], settings: FusionSettings) -> Baseline:
    """`current` is this check-in's findings as an item's `results`; `history` holds earlier items, newest
    first (`earlier_results`)."""
    kept = [item for item in history if item.results is not None][: settings.baseline_window]
    earlier = [item.results for item in kept if item.results is not None]
    first = not earlier
    gate = None if first else quality_gate(current, earlier, settings)
    alike = _recorded_alike(current, earlier, settings)
    factors: list[RiskFactor] = []
    changes: list[str] = []
    notable: list[dict[str, Any]] = []
    markers: dict[str, dict[str, dict]] = {}
    for section in MARKER_SECTIONS:
        markers[section] = {}
        gated = section in GATED_SECTIONS
        items = alike if gated else earlier
        for name, document in _section(current, section).items():
            past = [_section(results, section).get(name) for results in items]
            judged, marker, block = _judge(document, past, name, first, settings,
                                           not_measurable=gate if gated else None)
            markers[section][name] = judged
            if block is not None and block.notable:
                text, factor = _change(name, marker, block)
                changes.append(text)
                notable.append({"marker": name, "section": section, "z_score": block.z_score,
                                "direction": block.direction, "rules_fired": block.rules_fired,
                                "risk_factor": factor.factor if factor else None})
                if factor:
                    factors.append(factor)
    factors = _one_per_kind(factors)
    answers = compare_answers(current.answers, alike, first, settings, gate, notable)

    statuses = [_status(current)] + [_status(results) for results in earlier]
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
        "since": kept[-1].timestamp if kept else None,
        "rule": change_rule.RULE.name,
        "not_measurable": gate,
        "notable_changes": notable,
        "changes": changes,
        "missed_medication_streak": missed,
        "inconclusive_medication_streak": inconclusive,
        "previous_risk_levels": [results.multimodal_fusion.risk_level if results.multimodal_fusion else None
                                 for results in earlier[:5]],
    }
    return Baseline(report, factors, markers, answers)


def compare_answers(answers: Answers | None, earlier: list[PartialResults], first: bool, settings: FusionSettings,
                    gate: str | None, notable: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Audio's `answers` (as stored) with a baseline block on each answer's markers: the patient's earlier
    answers to the same prompt (`step_id`). None when the audio has no answers. Changes are listed in
    `notable` (reported, never scored: no measured error per answer yet)."""
    if answers is None:
        return None
    past_by_step: dict[str, list[Markers]] = {}
    for results in earlier:  # newest first
        for answer in (results.answers.items if results.answers else None) or []:
            if answer.step_id:
                past_by_step.setdefault(answer.step_id, []).append(_answer_markers(answer))
    out = {**answers.stored(), "items": []}
    for answer in answers.items or []:
        past = past_by_step.get(answer.step_id, []) if answer.step_id else []
        judged_markers = {}
        for name, document in _answer_markers(answer).items():
            judged, marker, block = _judge(document, [p.get(name) for p in past], name, first, settings,
                                           ANSWER_TRACKED.get(name, _DEFAULT), gate)
            judged_markers[name] = judged
            if block is not None and block.notable:
                notable.append({"marker": name, "section": "answers", "step_id": answer.step_id,
                                "z_score": block.z_score, "direction": block.direction,
                                "rules_fired": block.rules_fired, "risk_factor": None})
        out["items"].append({**answer.stored(), "markers": judged_markers})
    return out


def _answer_markers(answer: Answer) -> Markers:
    """An answer's markers in the stored shape the marker parse (`_marker`) and the baseline block read."""
    return {name: marker.stored() for name, marker in (answer.markers or {}).items()}


def _one_per_kind(factors: list[RiskFactor]) -> list[RiskFactor]:
    """Markers of one kind (e.g. speech production) make one factor, their evidence joined."""
    merged: dict[str, RiskFactor] = {}
    for f in factors:
        seen = merged.get(f.factor)
        merged[f.factor] = f if seen is None else RiskFactor(f.factor, f.severity, f"{seen.evidence}; {f.evidence}")
    return list(merged.values())


def _change(name: str, marker: Marker, block: BaselineBlock) -> tuple[str, RiskFactor | None]:
    """The notable change in words, with the rule that fired and its figures, and a risk factor when it
    is on the worse side of a tracked marker."""
    tracked = TRACKED.get(name, _DEFAULT)
    words = tracked.words if name in TRACKED else name.replace("_", " ")
    side = "below" if block.direction == "lower" else "above"
    text = (f"{words} {_fmt(marker.value)} {marker.unit}, {side} the patient's usual {_fmt(block.centre)} "
            f"(spread {_fmt(block.spread)}, {block.checkins} earlier check-ins): {_rules(block)}")
    if tracked.worse is not None and tracked.worse == block.direction:
        return text, RiskFactor(tracked.factor, tracked.severity, text)
    return text, None


def _rules(block: BaselineBlock) -> str:
    parts = []
    if "reliable_change" in (block.rules_fired or []):
        parts.append(f"reliable change, RCI {block.rci:+.1f} (threshold {block.rci_threshold:.2f})")
    if "sustained_drift" in (block.rules_fired or []):
        parts.append(f"sustained drift, CUSUM {block.cusum:.1f} over {block.cusum_checkins} check-ins "
                     f"(threshold {block.cusum_threshold:.2f})")
    return "; ".join(parts)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"
