"""The check-in timeline: validation where it enters, windows once the recording's length is known."""

import pytest
from pydantic import ValidationError

from shared.domain.timeline import CheckinTimeline, windows


def _timeline(*steps):
    return CheckinTimeline(entries=[{"step_id": s, "kind": k, "shown_at_ms": t} for s, k, t in steps])


def test_windows_run_from_each_step_to_the_next_and_the_last_to_the_end():
    timeline = _timeline(("mood", "prompt", 0), ("sleep", "prompt", 8000), ("show_pill", "dosing", 15500))
    result = windows(timeline, 20.0)
    assert [(w.step_id, w.start_s, w.end_s, w.clipped) for w in result.windows] == [
        ("mood", 0.0, 8.0, False), ("sleep", 8.0, 15.5, False), ("show_pill", 15.5, 20.0, False)]
    assert result.flags == ()
    assert [w.step_id for w in result.of_kind("dosing")] == ["show_pill"]
    assert result.span("sleep", "show_pill") == (8.0, 20.0)


def test_steps_past_the_recordings_end_are_clipped_and_flagged():
    timeline = _timeline(("mood", "prompt", 0), ("show_pill", "dosing", 9000), ("show_empty", "dosing", 14000))
    result = windows(timeline, 10.0)
    assert [(w.step_id, w.end_s, w.clipped) for w in result.windows] == [("mood", 9.0, False),
                                                                        ("show_pill", 10.0, True)]
    assert len(result.flags) == 2
    assert "show_empty" in result.flags[1] and "after the recording ended" in result.flags[1]


@pytest.mark.parametrize("steps, words", [
    ([("mood", "prompt", 5000), ("sleep", "prompt", 4000)], "out of order"),
    ([("mood", "prompt", -1)], "greater than or equal to 0"),
    ([("mood", "prompt", 0), ("mood", "prompt", 10)], "more than once"),
    ([("Mood!", "prompt", 0)], "pattern"),
    ([("mood", "question", 0)], "prompt"),
])
def test_a_malformed_timeline_is_refused_with_the_reason(steps, words):
    with pytest.raises(ValidationError, match=words):
        _timeline(*steps)


def test_an_oversized_or_empty_timeline_is_refused():
    with pytest.raises(ValidationError, match="at most 60"):
        _timeline(*[(f"s{i}", "prompt", i) for i in range(61)])
    with pytest.raises(ValidationError, match="at least 1"):
        CheckinTimeline(entries=[])


def test_the_stored_form_reads_back_and_none_means_no_timeline():
    timeline = _timeline(("mood", "prompt", 0), ("show_pill", "dosing", 900))
    assert CheckinTimeline.of(timeline.stored()) == timeline
    assert CheckinTimeline.of(None) is None


def test_the_clis_timeline_file_is_checked_before_anything_is_sent(tmp_path):
    from schizodot.cli import checkin_timeline

    good = tmp_path / "timeline.json"
    good.write_text('[{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},'
                    ' {"step_id": "sleep", "kind": "prompt", "shown_at_ms": 4100}]')
    assert checkin_timeline(good)[1] == {"step_id": "sleep", "kind": "prompt", "shown_at_ms": 4100}
    backwards = tmp_path / "backwards.json"
    backwards.write_text('[{"step_id": "mood", "kind": "prompt", "shown_at_ms": 900},'
                         ' {"step_id": "sleep", "kind": "prompt", "shown_at_ms": 100}]')
    with pytest.raises(ValueError, match="out of order"):
        checkin_timeline(backwards)
    broken = tmp_path / "broken.json"
    broken.write_text("[{")
    with pytest.raises(ValueError, match="--timeline"):
        checkin_timeline(broken)
    with pytest.raises(ValueError, match="--timeline"):
        checkin_timeline(tmp_path / "missing.json")
