"""The one shape of a reported value: a finding carries a value, a non-finding a reason."""

from __future__ import annotations

import pytest

from shared.markers import Baseline, Marker, measured, not_assessed, parse


def test_a_measured_marker_names_its_unit_method_and_flags() -> None:
    marker = measured(42.5, "%", "silero_vad_v6", ["narrowband_audio"])
    assert marker == {"assessed": True, "value": 42.5, "unit": "%", "method": "silero_vad_v6",
                      "quality_flags": ["narrowband_audio"]}
    assert parse(marker).value == 42.5


def test_a_marker_not_assessed_has_no_value_and_says_why() -> None:
    marker = not_assessed("semitones", "praat_pitch", "less than 1.5 s of voiced speech")
    assert marker["value"] is None and marker["assessed"] is False
    assert marker["reason"] == "less than 1.5 s of voiced speech"


@pytest.mark.parametrize("fields", [
    {"assessed": True, "value": None, "unit": "Hz", "method": "m"},          # a finding without a value
    {"assessed": False, "value": 1.0, "unit": "Hz", "method": "m", "reason": "r"},  # a value not assessed
    {"assessed": False, "value": None, "unit": "Hz", "method": "m"},         # no reason
    {"assessed": True, "value": 1.0, "unit": "", "method": "m"},             # no unit
    {"assessed": True, "value": 1.0, "unit": "Hz", "method": "m", "label": "x"},  # unknown field
])
def test_inconsistent_markers_are_refused(fields: dict) -> None:
    with pytest.raises(ValueError):
        Marker.model_validate(fields)


def test_a_baseline_needs_history_before_a_change_is_notable() -> None:
    with pytest.raises(ValueError):
        Baseline(available=False, notable=True, reason="first check-in")
    with pytest.raises(ValueError):
        Baseline(available=False)
    block = Baseline(available=True, checkins=5, mean=120.0, sd=10.0, z_score=-2.5, relative_change=-0.21,
                     notable=True, direction="lower")
    marker = Marker(assessed=True, value=95.0, unit="words per min", method="whisper_words", baseline=block)
    assert parse(marker.as_dict()).baseline == block
