"""Fusion rules on stage outputs in the contract's shapes (checkins.py)."""

from __future__ import annotations

import pytest

from services.fusion.baseline import compare, earlier_results, findings_of
from services.fusion.rules import NO_DETECTOR, clinical_summary, fuse
from services.fusion.settings import FusionSettings
from services.fusion.tests.checkins import (
    NOT_CONFIGURED,
    VALIDATION,
    as_audio,
    as_vision,
    audio,
    emotion,
    history,
    vision,
)

SETTINGS = FusionSettings()
BOTH = ["audio", "vision"]
WHEN = "2026-03-01T00:00:00Z"


def run(a: dict | None, v: dict | None, expected=BOTH, skipped=None, earlier=None, settings=SETTINGS):
    typed_audio, typed_vision = as_audio(a), as_vision(v)
    history = earlier_results(earlier or [], "job-now", settings.baseline_window)
    baseline = compare(findings_of(typed_audio, typed_vision), history, settings)
    fusion = fuse(typed_audio, typed_vision, expected, skipped or {}, settings,
                  baseline=(baseline.report, baseline.factors))
    return fusion, clinical_summary(fusion, (v or {}).get("compliance"), WHEN)


def test_by_default_the_voice_abstains_and_the_overall_emotion_rests_on_the_face():
    fusion, summary = run(audio(), vision(emotion("happy", 0.9, validation=VALIDATION)))
    assert fusion["overall_emotion"] == "happy" and fusion["overall_emotion_basis"] == ["face"]
    assert fusion["voice_emotion"] is None and fusion["emotional_consistency"] == "single_modality"
    assert fusion["emotion_not_used"] == {"voice": NOT_CONFIGURED}
    assert fusion["confidence"] == pytest.approx(0.9 * 0.6, abs=0.001)  # happy's share x the penalty for the voice
    assert summary["emotional_state"] == (f"Patient appears in good spirits (from the facial expression); "
                                          f"not assessed: speech emotion ({NOT_CONFIGURED})")
    assert fusion["modalities_not_assessed"] == {}  # the voice's markers were measured: audio was assessed


def test_consistency_needs_both_sides_validated():
    validated_voice = emotion("sad", 0.8, validation={"dataset": "IEMOCAP", "n": 900, "accuracy": 0.7})
    both, _ = run(audio(validated_voice), vision(emotion("happy", 0.9, validation=VALIDATION)))
    assert both["emotional_consistency"] == "inconsistent" and both["overall_emotion_basis"] == ["face", "voice"]
    assert [e["severity"] for e in both["risk_evidence"]] == ["low"] and both["risk_level"] == "low"
    agree, _ = run(audio(validated_voice), vision(emotion("sadness", 0.9, validation=VALIDATION)))
    assert agree["emotional_consistency"] == "consistent" and agree["overall_emotion"] == "sad"

    unvalidated_voice = emotion("sad", 0.8, note="the model came without its measured accuracy")
    one, summary = run(audio(unvalidated_voice), vision(emotion("happy", 0.9, validation=VALIDATION)))
    assert one["emotional_consistency"] == "single_modality" and one["voice_emotion"] is None
    assert one["emotion_not_used"] == {"voice": "the model came without its measured accuracy"}


def test_a_face_label_without_measured_accuracy_is_not_an_overall_emotion():
    fusion, summary = run(audio(), vision(emotion("happy", 0.9)))  # no validation block
    assert fusion["overall_emotion"] is None and fusion["confidence"] == 0.0
    assert fusion["emotional_consistency"] == "not_assessed"
    assert "facial expression (its method has no measured accuracy)" in summary["emotional_state"]


def test_emotion_labels_are_context_never_risk():
    fusion, _ = run(audio(), vision(emotion("fear", 0.95, validation=VALIDATION)))
    assert fusion["face_emotion"] == "anxious" and fusion["overall_emotion"] == "anxious"
    assert fusion["risk_factors"] == [] and fusion["risk_level"] == "low"


def test_no_pill_detector_is_adherence_not_assessed_and_raises_nothing():
    fusion, summary = run(audio(), vision(status="not_assessed"))
    assert fusion["adherence"] == {"status": "not_assessed", "assessed": False,
                                   "reason": "no pill detector is configured, so the pill could not be looked for"}
    assert fusion["risk_factors"] == [] and fusion["risk_level"] == "low"
    assert summary["medication_adherence"].startswith("Not assessed - no pill detector is configured")
    assert summary["recommendations"] == ["Continue current treatment plan", "Schedule routine follow-up"]
    # an older vision artifact that says "inconclusive" but names no detector is read the same way
    legacy = vision(status="inconclusive", detector=False)
    assert run(audio(), legacy)[0]["adherence"]["status"] == "not_assessed"
    assert run(audio(), {**legacy, "compliance": {**legacy["compliance"], "reason": None}})[0]["adherence"][
        "reason"] == NO_DETECTOR


@pytest.mark.parametrize(("status", "factor", "level"), [
    ("compliant", None, "low"),
    ("inconclusive", "medication_intake_unverified", "moderate"),
    ("non_compliant", "medication_not_taken", "high"),
])
def test_with_a_detector_the_intake_is_patient_evidence(status, factor, level):
    fusion, summary = run(audio(), vision(status=status))
    assert fusion["risk_factors"] == ([factor] if factor else []) and fusion["risk_level"] == level
    assert fusion["adherence"]["status"] == status and fusion["adherence"]["assessed"] is True
    if factor:
        assert "Confirm medication adherence with the patient" in summary["recommendations"]


@pytest.mark.parametrize("changed", [{}, {"speech_rate": 120.0}], ids=["steady", "slower-speech"])
def test_the_same_patient_evidence_gives_the_same_risk_with_and_without_a_detector(changed):
    """A patient who took the pill on camera: with no detector it is not assessed, with one it is compliant."""
    earlier = history(*((audio(), vision()) for _ in range(5)))
    without, _ = run(audio(**changed), vision(status="not_assessed"), earlier=earlier)
    with_detector, _ = run(audio(**changed), vision(status="compliant"), earlier=earlier)
    assert without["risk_level"] == with_detector["risk_level"] == ("low" if not changed else "moderate")
    assert without["risk_factors"] == with_detector["risk_factors"]


def test_a_checkin_with_nothing_notable_and_no_detector_is_low_risk():
    earlier = history(*((audio(), vision()) for _ in range(6)))
    fusion, summary = run(audio(), vision(), earlier=earlier)
    assert fusion["risk_level"] == "low" and fusion["risk_factors"] == []
    assert summary["risk_assessment"] == "Low risk - no concerning indicators"
    assert summary["change_from_baseline"] == "No notable change from the patient's last 6 check-in(s)"


def test_a_first_checkin_says_so_and_is_low_risk_by_itself():
    fusion, summary = run(audio(), vision())
    assert fusion["baseline"]["available"] is False and fusion["risk_level"] == "low"
    assert summary["change_from_baseline"] == "First check-in: no baseline yet to compare with"


def test_no_speech_and_no_face_are_moderate_and_named():
    fusion, summary = run(audio(speech=False, duration=6.0), vision(face_detected=False))
    assert fusion["risk_factors"] == ["no_speech", "face_not_visible"] and fusion["risk_level"] == "moderate"
    assert fusion["modalities_not_assessed"] == {
        "audio": "no speech detected in 6.0 s of audio",
        "vision": "no face was visible in any of the 40 analysed frames"}
    assert "Ask the patient to record the next check-in with face and voice clearly captured" in summary["recommendations"]


def test_an_audio_only_checkin_names_the_missing_video_and_does_not_score_adherence():
    fusion, summary = run(audio(), None, expected=["audio"], skipped={"vision": "the recording has no video track"})
    assert fusion["modalities_not_assessed"] == {"vision": "the recording has no video track"}
    assert fusion["adherence"] == {"status": "not_assessed", "assessed": False, "reason": "the check-in has no video"}
    assert fusion["risk_level"] == "low" and fusion["risk_factors"] == []
    assert "not assessed: vision (the recording has no video track)" in summary["emotional_state"]
    assert summary["medication_adherence"] == "Not assessed - the check-in has no video"


@pytest.mark.parametrize("missing", [0, 1, 2])
def test_each_emotion_side_left_out_multiplies_confidence_by_the_penalty(missing):
    settings = FusionSettings(missing_modality_penalty=0.5)
    voice = emotion("happy", 1.0, validation={"dataset": "d", "n": 10, "accuracy": 0.7})
    face = emotion("happy", 1.0, validation=VALIDATION)
    a = audio(voice if missing < 2 else None)
    v = vision(face if missing < 1 else emotion("happy", 1.0))
    fusion, _ = run(a, v, settings=settings)
    assert fusion["confidence"] == (1.0, 0.5, 0.0)[missing]
    assert len(fusion["emotion_not_used"]) == missing


def test_three_moderate_factors_make_high_risk():
    fusion, _ = run(audio(speech=False), vision(face_detected=False, status="inconclusive"))
    assert sorted(fusion["risk_factors"]) == ["face_not_visible", "medication_intake_unverified", "no_speech"]
    assert fusion["risk_level"] == "high"
    assert run(audio(), vision(face_detected=False, status="inconclusive"))[0]["risk_level"] == "moderate"


def test_a_transcript_statement_is_high_risk_for_clinician_review():
    words = "Some days I want to kill myself but I took my pills".split()
    transcript = {"enabled": True, "text": " ".join(words), "model": "whisper", "reason": None, "language": "en",
                  "language_note": "only English is transcribed",
                  "segments": [{"start": 3.0, "end": 7.0, "text": " ".join(words),
                                "words": [{"word": w, "start": 3.0 + 0.4 * i, "end": 3.3 + 0.4 * i}
                                          for i, w in enumerate(words)]}]}
    fusion, summary = run(audio(transcript=transcript), vision())
    assert fusion["risk_level"] == "high" and fusion["risk_factors"] == ["transcript_suicide"]
    evidence = fusion["risk_evidence"][0]["evidence"]
    assert evidence == ('the patient said "kill myself" at 5.0 s (suicide; for clinician review, not a diagnosis)')
    [flag] = summary["flags"]
    assert flag["phrase"] == "kill myself" and flag["start"] == 5.0 and flag["end"] == 5.7
    assert flag["note"] == "for clinician review, not a diagnosis" and flag["severity"] == "high"
    assert summary["recommendations"][:2] == [
        "Review the flagged statements in the transcript (for clinician review, not a diagnosis)",
        "Contact the patient within 24 hours"]
    assert summary["transcript_screen"]["assessed"] is True
    assert summary["transcript_screen"]["language_note"] == "only English is transcribed"


def test_without_a_transcript_the_screen_says_it_did_not_run():
    fusion, summary = run(audio(), vision())
    assert summary["flags"] == []
    assert summary["transcript_screen"]["assessed"] is False
    assert summary["transcript_screen"]["reason"] == "transcription is off (AUDIO_TRANSCRIPT_ENABLED)"


def test_without_history_the_summary_says_baseline_was_not_assessed():
    fusion = fuse(as_audio(audio()), as_vision(vision()), BOTH, {}, SETTINGS)
    assert fusion["baseline"] is None
    assert clinical_summary(fusion, None, WHEN)["change_from_baseline"] == "Change from baseline was not assessed"


@pytest.mark.parametrize("said", ["taken", "missed", "stopped"])
def test_what_the_patient_said_about_the_medication_is_never_read_as_observed_intake(said):
    """Self-report (audio's `self_report`) neither verifies intake nor moves the adherence status."""
    report = {"classification": said, "words": ["x"], "assessed": True, "observed": False,
              "method": "rules_v1", "window_source": "timeline", "reason": "self-reported by the patient"}
    plain, _ = run(audio(), vision())
    fusion, summary = run({**audio(), "self_report": report}, vision())
    assert fusion["adherence"] == plain["adherence"] == {"status": "not_assessed", "assessed": False,
                                                        "reason": plain["adherence"]["reason"]}
    assert fusion["risk_factors"] == plain["risk_factors"]
    assert "observed" not in summary["medication_adherence"].lower()
