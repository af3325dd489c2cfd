"""The one shape of a reported value: a finding carries a value, a non-finding a reason."""

from __future__ import annotations

import pytest

from shared.domain.markers import Baseline, Marker, measured, not_assessed, parse


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


def test_a_recording_that_is_not_measurable_raises_no_change_and_a_notable_change_names_its_rule() -> None:
    with pytest.raises(ValueError):
        Baseline(available=True, checkins=5, measurable=False, notable=True, reason="not measurable: clipped")
    with pytest.raises(ValueError):
        Baseline(available=True, checkins=5, measurable=False)  # says why
    with pytest.raises(ValueError):
        Baseline(available=True, checkins=5, notable=True, direction="lower", rules_fired=[])
    with pytest.raises(ValueError):
        Baseline(available=True, checkins=5, rules_fired=[], surprise=1.0)  # extra fields are refused
    block = Baseline(available=True, checkins=8, mean=210.0, sd=7.0, z_score=-5.9, notable=True, direction="lower",
                     rule="robust baseline ...", measurable=True, centre=210.0, spread=10.1, spread_floor=10.1,
                     rci=-5.3, rci_threshold=3.69, cusum=5.9, cusum_threshold=4.82, cusum_checkins=3,
                     rules_fired=["reliable_change", "sustained_drift"])
    marker = Marker(assessed=True, value=150.0, unit="syllables per min", method="praat", baseline=block)
    assert parse(marker.as_dict()).baseline == block
