"""bench/change.py on a small seed set: the new change rule keeps its false alerts within the goal where
today's z rule does not, and catches what can be caught (python -m bench.change prints the full figures)."""

from __future__ import annotations

import pytest

from bench import change as bench

HISTORIES, SEED = 60, 11  # per marker (5), noise level (3) and change: 8100 judged stable check-ins per level


@pytest.fixture(scope="module")
def figures():
    changes = ("step 1 SD", "step 3 SD")
    return (bench.simulate(HISTORIES, SEED, bench.legacy_alerts, None, changes=changes),
            bench.simulate(HISTORIES, SEED, bench.new_alerts, bench.RULE, changes=changes))


def detection(f: bench.Figures, change: str) -> float:
    hit, n, _ = f.detected[change]
    return hit / n


def test_the_new_rule_keeps_false_alerts_within_the_goal_at_every_noise_level(figures):
    legacy, new = figures
    for multiple, f in new.items():
        assert f.judged == 5 * HISTORIES * (bench.STABLE_CHECKINS - bench.MIN_CHECKINS)
        assert f.per_100() <= bench.GOAL_FALSE_PER_100, multiple
    assert legacy[2.0].per_100() > bench.GOAL_FALSE_PER_100  # today's rule raises a decline more often than that


def test_the_new_rule_catches_large_steps_and_a_fair_share_of_what_any_rule_could(figures):
    _, new = figures
    ceiling = bench.oracle_detection(1.0)  # known usual value and SD: no rule on an estimated baseline does better
    assert 0.35 < ceiling < bench.GOAL_DETECTION  # the 80 % goal at 1 SD is out of reach at 2 false alerts per 100
    for multiple in (2.0, 4.0):
        assert detection(new[multiple], "step 3 SD") >= bench.GOAL_DETECTION, multiple
        assert detection(new[multiple], "step 1 SD") >= 0.4 * ceiling, multiple  # 0.48-0.68 on the seeds tried
    assert all(sorted(new[m].detected["step 3 SD"][2])[len(new[m].detected["step 3 SD"][2]) // 2] <= 2 for m in new)


def test_the_report_runs_and_says_whether_the_goal_is_met(capsys):
    assert bench.main(["--histories", "20", "--no-tune"]) == 0
    out = capsys.readouterr().out
    assert "today (z)" in out and "new " in out and "goal (<= 2 false alerts per 100" in out and "ceiling:" in out
