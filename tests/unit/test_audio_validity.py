"""The audio stage claims a marker is validated only where the stored bench output
(services/audio/validity.json, `python -m bench.audio --validity --write`) shows it."""

from __future__ import annotations

import copy

from services.audio import markers
from services.audio.markers import UNITS, VALIDATED, VALIDITY_FILE, load_validity, validated_markers


def test_the_stored_bench_output_was_written_by_the_bench_and_covers_every_marker():
    stored = load_validity()
    assert VALIDITY_FILE.exists(), "run `python -m bench.audio --validity --write`"
    assert stored["written_by"] == "python -m bench.audio --validity --write"
    assert set(UNITS) <= set(stored["markers"])


def test_the_claimed_markers_are_exactly_those_the_stored_output_shows_measured():
    assert VALIDATED == validated_markers(load_validity())
    assert VALIDATED, "no marker validated: the stored bench output is empty or failing"


def test_a_marker_the_bench_did_not_measure_well_or_at_all_is_not_validated():
    stored = load_validity()
    weak = copy.deepcopy(stored)
    next(iter(weak["markers"]["shimmer"].values()))["r"] = 0.2  # values that no longer follow the truth
    del weak["markers"]["hnr"]  # never measured
    rarely = copy.deepcopy(stored)
    row = next(iter(rarely["markers"]["jitter"].values()))
    row["measured"] = int(row["n"] * 0.5)  # measured on half the signals only
    assert "shimmer" not in validated_markers(weak) and "hnr" not in validated_markers(weak)
    assert "jitter" not in validated_markers(rarely)
    assert validated_markers({}) == frozenset()


def test_a_marker_without_measured_validity_is_reported_not_assessed(monkeypatch):
    monkeypatch.setattr(markers, "VALIDATED", VALIDATED - {"pitch_mean"})
    reason = markers._why_not("pitch_mean", 120.0, None, 10.0, 8.0, None, False)  # checked before anything else
    assert reason == "this marker's method has no measured validity yet"
