"""The command line's tables of a check-in (`schizodot submit`, `schizodot results`), from the results API's items
parsed as `ResultItem`: every finding with its unit and method, the change from the patient's usual, and why
what was not assessed was not."""

from __future__ import annotations

from rich.console import Console

from schizodot.result_view import history_table, result_table
from shared.domain.findings import ResultItem
from tests.browser.contract_items import answers_block, history


def _text(table) -> str:
    console = Console(width=220, record=True, color_system=None)
    console.print(table)
    return console.export_text()


def _shown(items: list[dict]) -> list[ResultItem]:
    """As the results API shows them: the clinic's own patient id, the clinic named."""
    return [ResultItem.model_validate(item) for item in items]


def test_a_checkin_prints_each_finding_with_its_unit_method_and_the_patients_usual():
    items = history("patient-101", "clinic-north", 6,
                    flags=[{"category": "suicide", "phrase": "want to die", "start": 12.5, "note": "reviewed"}])
    last = items[-1]
    last["results"]["answers"] = answers_block("I slept badly and I feel tired today".split(), [1.0, 1.2, 1.1])
    text = _text(result_table(_shown([last])[0]))
    assert f"Check-in {last['job_id']} of patient-101" in text
    assert "Risk" in text and "moderate" in text
    assert 'suicide: "want to die" at 12.5 s (reviewed)' in text
    speech = next(line for line in text.splitlines() if "Voice: speech rate" in line)
    assert "(usual " in speech and "notably lower" in speech and "syllables" in speech  # unit and the change
    jitter = next(line for line in text.splitlines() if "Voice: jitter" in line)
    assert "not assessed: the voice was too quiet to measure jitter reliably" in jitter  # the reason, no number
    assert "Answer: mood" in text and '"I slept badly and' in text
    assert "only 4 words; MATTR needs at least 10" in text
    assert "Processing time" in text


def test_a_patients_history_prints_a_line_per_checkin_newest_first():
    items = _shown(list(reversed(history("patient-101", "clinic-north", 3, risks=["low", "low", "high"]))))
    lines = [line for line in _text(history_table("patient-101", items)).splitlines() if "job-" in line]
    assert [item.job_id in line for item, line in zip(items, lines)] == [True, True, True]
    assert "high" in lines[0] and "inconclusive" in lines[0]
