"""What the console's pages show, computed from stored results (newest first)
in the clinic's time zone. Plain data for the templates; no HTML here, so the
templates' autoescaping is the one place text meets markup."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from services.results import adherence
from services.results.alerts import Alert, RosterEntry
from shared.domain.clinics import CheckinScript
from shared.domain.findings import AnswerTranscript, Compliance, DosingStep, ResultItem, Results, SummaryFlag
from shared.domain.job import Job
from shared.domain.patients import ClinicPatientId
from shared.domain.stored_results import (
    RISK_ORDER,
    MarkerReading,
    checkin_time,
    fmt_local,
    markers,
    medication_status,
    risk_level,
    transcript_flags,
)

TREND_MARKERS = ("speech_rate", "pitch_variability", "facial_expressivity", "speaking_fraction")
STEP_LABELS = {
    "face_in_view": "Face in view", "hand_in_view": "Hand in view", "pill_visible": "Pill shown",
    "hand_to_mouth": "Hand to mouth", "mouth_open": "Mouth open", "pill_in_mouth": "Pill on the tongue",
    "mouth_empty_after": "Mouth shown empty",
}


@dataclass(frozen=True)
class Trend:
    label: str
    arrow: str
    words: str


@dataclass(frozen=True)
class PatientRow:
    patient_id: ClinicPatientId
    last_checkin: str | None
    last_checkin_sort: str
    risk: str | None
    open_alerts: int
    streak: int
    streak_words: str
    trends: list[Trend]


def trend(reading: MarkerReading) -> Trend:
    baseline = reading.baseline
    if reading.value is None:
        return Trend(reading.label, "–", f"{reading.label}: not assessed in the last check-in")
    if baseline.measurable is False:  # the recording failed fusion's quality gate
        return Trend(reading.label, "·", f"{reading.label}: not measurable in the last check-in")
    if not baseline.available:
        return Trend(reading.label, "·", f"{reading.label}: no baseline yet")
    if baseline.notable:
        direction = baseline.direction or "different"
        arrow = "↓" if direction == "lower" else "↑"
        worse = " (worse)" if reading.decline else ""
        return Trend(reading.label, arrow, f"{reading.label}: notably {direction} than usual{worse}")
    return Trend(reading.label, "→", f"{reading.label}: within the usual range")


def adherence_streak(items: Sequence[ResultItem]) -> tuple[int, str]:
    """Check-ins in a row, newest first, with the dose verified or reported taken; and how to say it
    (services/results/adherence.py: which were verified and which only reported)."""
    run = adherence.streak(items)
    return run.length, run.words


def patient_row(entry: RosterEntry, items: Sequence[ResultItem], open_alerts: int, zone: ZoneInfo) -> PatientRow:
    latest = items[0] if items else None
    streak, words = adherence_streak(items)
    readings = {m.name: m for m in markers(latest)} if latest else {}
    last = checkin_time(latest) if latest else None
    return PatientRow(
        patient_id=entry.patient_id,
        last_checkin=fmt_local(last, zone) if last else None,
        last_checkin_sort=last.isoformat() if last else "",
        risk=risk_level(latest) if latest else None,
        open_alerts=open_alerts,
        streak=streak,
        streak_words=words,
        trends=[trend(readings[name]) for name in TREND_MARKERS if name in readings],
    )


SORT_KEYS = {
    "patient": lambda r: r.patient_id,
    "risk": lambda r: (RISK_ORDER.get(r.risk or "", -1), r.last_checkin_sort),
    "alerts": lambda r: (r.open_alerts, r.last_checkin_sort),
    "last_checkin": lambda r: r.last_checkin_sort,
    "streak": lambda r: (r.streak, r.last_checkin_sort),
}


def sort_rows(rows: list[PatientRow], sort: str, descending: bool) -> list[PatientRow]:
    return sorted(rows, key=SORT_KEYS.get(sort, SORT_KEYS["risk"]), reverse=descending)


@dataclass
class CalendarDay:
    day: date
    status: str  # an adherence category (services/results/adherence.py) | none | future
    words: str
    mark: str = ""


def adherence_calendar(items: Sequence[ResultItem], zone: ZoneInfo, today: date, weeks: int = 6) -> list[list[CalendarDay]]:
    """Weeks (Monday first) ending with this week; each day the worst intake seen that day, by its source."""
    worst = {"not_taken": 6, "reported_missed": 5, "unverifiable": 4, "not_assessed": 3, "reported_taken": 2,
             "verified_by_detector": 1, "verified_by_review": 0}
    by_day: dict[date, str] = {}
    for item in items:
        day = checkin_time(item).astimezone(zone).date()
        status = adherence.intake_of(item)
        if day not in by_day or worst[status] > worst[by_day[day]]:
            by_day[day] = status
    start = today - timedelta(days=today.weekday()) - timedelta(weeks=weeks - 1)
    grid = []
    for week in range(weeks):
        row = []
        for offset in range(7):
            day = start + timedelta(days=7 * week + offset)
            if day > today:
                row.append(CalendarDay(day, "future", ""))
            elif day in by_day:
                row.append(CalendarDay(day, by_day[day], f"medication {adherence.WORDS[by_day[day]]}",
                                       adherence.MARKS[by_day[day]]))
            else:
                row.append(CalendarDay(day, "none", "no check-in"))
        grid.append(row)
    return grid


def highlight(text: str, phrases: list[str]) -> list[tuple[str, bool]]:
    """The transcript cut into (piece, flagged) so the template can mark flagged phrases (case-insensitive)."""
    lowered = text.lower()
    spans: list[tuple[int, int]] = []
    for phrase in sorted({p.strip().lower() for p in phrases if p.strip()}, key=len, reverse=True):
        start = lowered.find(phrase)
        while start >= 0:
            end = start + len(phrase)
            if not any(s < end and start < e for s, e in spans):
                spans.append((start, end))
            start = lowered.find(phrase, end)
    pieces, at = [], 0
    for start, end in sorted(spans):
        if start > at:
            pieces.append((text[at:start], False))
        pieces.append((text[start:end], True))
        at = end
    if at < len(text):
        pieces.append((text[at:], False))
    return pieces


ANSWER_LABELS = {
    "response_latency": "Response latency", "speaking_time": "Speaking time",
    "speaking_fraction": "Share of the answer spoken", "pause_count": "Pauses", "pause_rate": "Pause rate",
    "speech_rate": "Speech rate", "word_count": "Words", "mean_length_of_utterance": "Mean length of utterance",
    "mattr": "Lexical diversity (MATTR)",
}


@dataclass(frozen=True)
class AnswerReading(MarkerReading):
    @property
    def label(self) -> str:
        return ANSWER_LABELS.get(self.name, super().label)


@dataclass
class AnswerView:
    """One answer: the question it answers (the clinic's script), its markers and its transcript."""

    step_id: str
    question: str
    start_s: float
    end_s: float
    clipped: bool
    readings: list[AnswerReading]
    text: str | None  # None: no transcript for this check-in
    language: str | None


@dataclass
class AnswersView:
    assessed: bool
    reason: str | None
    flags: list[str]
    items: list[AnswerView]


def answers_view(results: Results, script: CheckinScript | None) -> AnswersView | None:
    """`results.answers` (services/audio/answers.py; fusion adds each marker's baseline), one answer under
    another, each with its question in the clinic's words; None where the check-in has no audio findings."""
    block = results.answers
    if block is None:
        return None
    questions = {step.id: step.text for step in (script or CheckinScript()).prompts}
    items = []
    for item in block.items or []:
        step_id = str(item.step_id)
        readings = [AnswerReading("answers", name, marker) for name, marker in (item.markers or {}).items()
                    if "unit" in marker.model_fields_set]
        transcript = item.transcript
        if isinstance(transcript, str):
            transcript = AnswerTranscript(text=transcript) if transcript else None
        transcript = transcript if transcript and transcript.stored() else None
        items.append(AnswerView(
            step_id=step_id, question=questions.get(step_id, f"Question {step_id!r} (not in the clinic's script)"),
            start_s=float(item.start_s or 0.0), end_s=float(item.end_s or 0.0),
            clipped=bool(item.clipped), readings=readings,
            text=transcript.text if transcript else None, language=transcript.language if transcript else None))
    return AnswersView(assessed=bool(block.assessed), reason=block.reason,
                       flags=[str(f) for f in block.flags or []], items=items)


@dataclass
class NotAssessed:
    what: str
    reason: str


@dataclass(frozen=True)
class StepView:
    """A dosing step as the check-in page lists it: labelled, and seen, not seen or not assessed."""

    step: str | None
    label: str
    state: str
    first_seen_s: float | None
    confidence: float | None
    note: str | None
    evidence_frame: str | None


@dataclass
class CheckinView:
    item: ResultItem
    when: str
    risk: str | None
    medication: str | None
    vocal: list[MarkerReading]
    video: list[MarkerReading]
    steps: list[StepView]
    evidence_steps: list[str]
    transcript: list[tuple[str, bool]] | None
    flags: list[SummaryFlag]
    not_assessed: list[NotAssessed]
    methods: list[tuple[str, str]]
    metadata: list[tuple[str, str]] = field(default_factory=list)
    options: list[tuple[str, str]] = field(default_factory=list)  # what the check-in asked for, and what applied
    answers: AnswersView | None = None  # per-question markers, where the check-in had audio
    transcript_language: str | None = None  # e.g. "es (Whisper p 0.85)"


def options_view(results: Results) -> list[tuple[str, str]]:
    """The check-in's options as the result reports them (`results.options`, written by fusion)."""
    options = results.options
    if options is None or not options.stored():
        return []
    requested = options.analyses_requested
    shown = [("Analyses", ", ".join(requested) if requested else "the deployment's defaults (every modality the "
                                                                   "recording has; the transcript where enabled)")]
    thresholds = options.thresholds or {}
    set_here = options.thresholds_set_on_checkin or {}
    for name, value in sorted(thresholds.items()):
        shown.append((name.replace("_", " ").capitalize(),
                      f"{value} ({'set on this check-in' if name in set_here else 'the clinic default'})"))
    return shown


def checkin_view(item: ResultItem, job: Job | None, zone: ZoneInfo, script: CheckinScript | None = None
                 ) -> CheckinView:
    results = item.results
    readings = markers(item)
    steps = _steps(results.compliance)
    transcript = results.transcript
    enabled = bool(transcript and transcript.enabled)
    flags = transcript_flags(item)
    text = transcript.text if transcript and enabled else None
    answers = answers_view(results, script)
    language = None
    if transcript and enabled and transcript.language:
        language = transcript.language + (f" (Whisper p {transcript.language_probability:.2f})"
                                          if transcript.language_probability is not None else "")
    metadata = {**(job.metadata if job else {}), **(item.metadata or {})}
    shown = [(str(k), _plain(v)) for k, v in sorted(metadata.items()) if k not in ("pipeline", "clinic_id")]
    return CheckinView(
        item=item, when=fmt_local(checkin_time(item), zone), risk=risk_level(item), medication=medication_status(item),
        vocal=[r for r in readings if r.group == "vocal_markers"], video=[r for r in readings if r.group == "video_markers"],
        steps=steps, evidence_steps=[s.step for s in steps if s.evidence_frame and s.step],
        transcript=highlight(text, [str(f.phrase) for f in flags]) if text else None,
        flags=flags, not_assessed=_not_assessed(results, readings, answers), methods=_methods(results),
        metadata=shown, options=options_view(results), answers=answers, transcript_language=language,
    )


def _steps(compliance: Compliance) -> list[StepView]:
    """The dosing steps, labelled, each seen, not seen or not assessed."""
    return [_step(step) for step in compliance.steps or []]


def _step(step: DosingStep) -> StepView:
    note = str(step.note or "")
    state = "seen" if step.observed else ("not assessed" if note.startswith("not assessed") else "not seen")
    return StepView(step.step, STEP_LABELS.get(step.step or "", str(step.step)), state, step.first_seen_s,
                    step.confidence, step.note, step.evidence_frame)


def _not_assessed(results: Results, readings: list[MarkerReading], answers: AnswersView | None
                  ) -> list[NotAssessed]:
    """Everything the check-in did not assess, each with its reason (never a silent pass)."""
    missing: list[NotAssessed] = []
    for emotion, what in ((results.audio_emotion, "Speech emotion"), (results.facial_emotion, "Facial emotion")):
        if emotion.assessed is False:
            missing.append(NotAssessed(what, str(emotion.reason or "no reason given")))
    for reading in readings:
        if reading.value is None:
            missing.append(NotAssessed(reading.label, str(reading.marker.reason or "no reason given")))
    detector = results.compliance.pill_detector
    if detector is not None and detector.stored() and not detector.configured:
        missing.append(NotAssessed("Pill steps of observed dosing", str(detector.note or
                                                                         "no pill detector is configured")))
    elif detector is not None and detector.note:
        missing.append(NotAssessed("Pill detector", str(detector.note)))
    for modality, reason in (results.multimodal_fusion.modalities_not_assessed or {}).items():
        missing.append(NotAssessed(f"{modality.capitalize()} in the risk level", str(reason)))
    transcript = results.transcript
    screen = results.clinical_summary.transcript_screen
    if not (transcript and transcript.enabled):
        missing.append(NotAssessed("Transcript", str((transcript.reason if transcript else None)
                                                     or (screen.reason if screen else None)
                                                     or "transcription is not enabled")))
    elif screen is not None and screen.assessed is False:  # e.g. a language without a phrase list: never silent
        missing.append(NotAssessed("Safety screen of the transcript", str(screen.reason or "not screened")))
    if answers is not None and not answers.assessed:
        missing.append(NotAssessed("Per-question markers", str(answers.reason or "no reason given")))
    return missing


def _methods(results: Results) -> list[tuple[str, str]]:
    """The method (model and its measured validity, where known) behind each finding shown."""
    methods: list[tuple[str, str]] = []
    facial = results.facial_emotion
    if facial.method:
        validation = facial.validation or {}
        measured = (f" (balanced recall {validation['balanced_recall']:.0%} on {validation.get('dataset')}, "
                    f"n={validation.get('n')})") if validation.get("balanced_recall") is not None else ""
        methods.append(("Facial emotion", f"{facial.method}{measured}"))
    fusion = results.multimodal_fusion
    if fusion.method:
        methods.append(("Risk level", str(fusion.method)))
    transcript = results.transcript
    if transcript and transcript.model:
        language = (f", language {transcript.language}" if transcript.language else "") + (
            f" (p {transcript.language_probability:.2f})" if transcript.language_probability is not None else "")
        methods.append(("Transcript", f"{transcript.model}{language}"))
    summary = results.clinical_summary
    if summary.generated_by:
        methods.append(("Clinical summary", str(summary.generated_by)))
    detector = results.compliance.pill_detector
    if detector is not None and detector.model:
        methods.append(("Pill detector", str(detector.model)))
    return methods


def _plain(value: object) -> str:
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def alert_sort(alerts: list[Alert]) -> list[Alert]:
    """Open first, then newest first."""
    newest = sorted(alerts, key=lambda a: a.alert_id, reverse=True)
    return sorted(newest, key=lambda a: a.state != "open")


def local_time(value: str | None, zone: ZoneInfo) -> str:
    if not value:
        return ""
    return fmt_local(datetime.fromisoformat(value.replace("Z", "+00:00")), zone)
