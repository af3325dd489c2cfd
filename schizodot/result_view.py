"""A check-in's result as the command line prints it (`schizodot submit --wait`, `schizodot results`):
the results API's items, parsed once (`ResultItem`), in tables a clinician reads."""

from __future__ import annotations

from collections.abc import Sequence

from rich.markup import escape
from rich.table import Table

from shared.domain.findings import Emotion, MarkerValue, ResultItem
from shared.domain.stored_results import transcript_flags


def result_table(item: ResultItem) -> Table:
    """One check-in: risk and its evidence, flags, each marker against the patient's usual, per answer."""
    results = item.results
    fusion, summary = results.multimodal_fusion, results.clinical_summary
    table = Table(title=f"Check-in {item.job_id} of {item.user_id} ({item.analyzed_at})", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("Risk", f"[bold]{fusion.risk_level}[/] " + (
        "; ".join(f"{e.factor} ({e.severity}): {e.evidence}" for e in fusion.risk_evidence or [])
        or "no risk factors"))
    for flag in transcript_flags(item):
        table.add_row("[red]Flag[/]", f"{(flag.category or '').replace('_', ' ')}: \"{escape(flag.phrase or '')}\" "
                                      f"at {flag.start or 0:.1f} s ({flag.note or ''})")
    for markers, title in ((results.vocal_markers, "Voice"), (results.video_markers, "Face and head")):
        for name, marker in (markers or {}).items():
            table.add_row(f"{title}: {name.replace('_', ' ')}", marker_line(marker))
    transcript = results.transcript
    if transcript is not None and transcript.enabled:
        probability = transcript.language_probability
        table.add_row("Transcript language", f"{transcript.language or 'unknown'}"
                      + (f" (Whisper p {probability:.2f})" if probability is not None else ""))
    _answers(table, item)
    table.add_row("Facial emotion", emotion_line(results.facial_emotion))
    table.add_row("Speech emotion", emotion_line(results.audio_emotion))
    table.add_row("Medication", summary.medication_adherence or "")
    table.add_row("Change from baseline", summary.change_from_baseline or "")
    table.add_row("Assessment", summary.risk_assessment or "")
    table.add_row("Recommendations", "\n".join(f"- {r}" for r in summary.recommendations or []))
    seconds = item.processing_time_seconds
    table.add_row("Processing time", f"{seconds:.1f} s" if seconds is not None else "not recorded")
    return table


def history_table(patient_id: str, items: Sequence[ResultItem]) -> Table:
    """A patient's results, newest first, a line each."""
    table = Table(title=f"Results of {patient_id}, newest first")
    for column in ("timestamp", "job_id", "emotion", "consistency", "medication", "risk"):
        table.add_column(column)
    for item in items:
        fusion = item.results.multimodal_fusion
        table.add_row(item.timestamp, item.job_id, str(fusion.overall_emotion), str(fusion.emotional_consistency),
                      str(item.results.compliance.verification_status), fusion.risk_level)
    return table


def _answers(table: Table, item: ResultItem) -> None:
    answers = item.results.answers
    if answers is None:
        return
    if not answers.assessed:
        table.add_row("Per-question markers", f"[dim]not assessed: {escape(answers.reason or '')}[/]")
    for answer in answers.items or []:
        said = answer.transcript if isinstance(answer.transcript, str) else \
            answer.transcript.text if answer.transcript else None
        table.add_row(f"Answer: {(answer.step_id or '').replace('_', ' ')}",
                      f"{answer.start_s or 0:.1f}-{answer.end_s or 0:.1f} s" + (f' "{escape(said)}"' if said else ""))
        for name, marker in (answer.markers or {}).items():
            table.add_row(f"  {name.replace('_', ' ')}", marker_line(marker, method=False))


def marker_line(marker: MarkerValue, method: bool = True) -> str:
    """A marker as a clinician reads it: value and unit, the change from the patient's usual, or why not."""
    if not marker.assessed or marker.value is None:
        return f"[dim]not assessed: {escape(marker.reason or '')}[/]"
    line = f"{marker.value:.4g} {marker.unit or ''}"
    baseline = marker.baseline
    if baseline is not None and baseline.available and baseline.mean is not None:
        change = baseline.relative_change
        line += f" (usual {baseline.mean:.4g}" + (f", {change:+.0%}" if change is not None else "") + ")"
        if baseline.notable:
            line += f" [bold yellow]notably {baseline.direction}[/]"
    elif baseline is not None and baseline.reason:
        line += f" [dim]({baseline.reason})[/]"
    if marker.quality_flags:
        line += f" [dim]flags: {', '.join(marker.quality_flags)}[/]"
    return line + (f" [dim]{marker.method}[/]" if method and marker.method else "")


def emotion_line(emotion: Emotion) -> str:
    assessed = emotion.assessed if emotion.assessed is not None else emotion.primary_emotion is not None
    if not assessed or not emotion.primary_emotion:
        return f"[dim]not assessed: {escape(emotion.reason or 'no data')}[/]"
    method = f" [dim]{emotion.method}[/]" if emotion.method else ""
    confidence = f" ({emotion.confidence:.2f})" if emotion.confidence is not None else ""
    return f"{emotion.primary_emotion}{confidence}{method}"
