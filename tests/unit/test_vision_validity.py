"""The vision stage cites a facial-emotion accuracy only where the stored bench output
(services/vision/validity.json, `python -m bench.vision --accuracy --write`) shows it."""

from __future__ import annotations

import copy

from services.vision.emotion import (
    VALIDATION,
    VALIDITY_COMMAND,
    VALIDITY_FILE,
    load_validity,
    validation_for,
    validations,
)


def test_the_stored_bench_output_was_written_by_the_bench():
    assert VALIDITY_FILE.exists(), f"run `{VALIDITY_COMMAND}`"
    stored = load_validity()
    assert stored["written_by"] == VALIDITY_COMMAND
    assert {"fer + face-api", "fer"} <= set(stored["backends"])


def test_each_cited_figure_is_the_stored_one_and_agrees_with_its_own_counts():
    stored = load_validity()
    assert VALIDATION == validations(stored)
    for backend, figures in stored["backends"].items():
        cited = validation_for(backend)
        assert cited["measured"] is True and cited["command"] == VALIDITY_COMMAND
        for key in ("n", "readings", "correct", "accuracy", "balanced_recall", "recall"):
            assert cited[key] == figures[key], (backend, key)
        assert round(figures["correct"] / figures["n"], 3) == figures["accuracy"]
        assert sum(int(r.split("/")[0]) for r in figures["recall"].values()) == figures["correct"]
        assert sum(int(r.split("/")[1]) for r in figures["recall"].values()) == figures["n"]


def test_a_backend_the_bench_did_not_measure_claims_no_accuracy():
    stored = copy.deepcopy(load_validity())
    del stored["backends"]["fer"]
    stored["backends"]["fer + face-api"]["balanced_recall"] = None  # a figure the bench did not produce
    assert validations(stored) == {}
    assert validations({}) == {}
    unknown = validation_for("some other network")
    assert unknown["measured"] is False and "not been measured" in unknown["note"]
