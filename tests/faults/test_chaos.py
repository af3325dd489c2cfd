"""The reduced load and chaos run (40 check-ins, 8 in flight) that `make test`
runs; `make chaos` runs 200 and prints the figures (tests/faults/chaos.py)."""

from __future__ import annotations

import json

import pytest

from tests.faults.chaos import run_chaos

pytestmark = pytest.mark.slow


def test_forty_checkins_through_kills_and_aws_faults(tmp_path):
    figures = run_chaos(40, 8, workdir=tmp_path)
    print(json.dumps(figures, indent=2))
    report = json.dumps({k: figures[k] for k in ("client_crashes", "failed_jobs", "dead_letters_unexplained",
                                                 "orphan_jobs", "seed")}, indent=1)
    assert figures["client_crashes"] == [], report
    assert figures["jobs_completed"] == 40, report
    assert figures["users_items"] == 40 and figures["jobs_with_exactly_one_users_item"] == 40, report
    assert figures["dead_letters_unexplained"] == [], report
    assert figures["jobs_left_processing"] == 0, report
    assert figures["progress_not_monotonic"] == [], report
    # The monkey killed every kind of process, the AWS server included, and the proxy did inject faults.
    assert set(figures["kills"]) == {"aws", "ingest", "audio", "vision", "fusion", "results"}, figures["kills"]
    assert sum(n for service in figures["faults_injected"].values() for fault, n in service.items()
               if fault in ("throttle", "server_error", "drop_before", "drop_after")) > 20
