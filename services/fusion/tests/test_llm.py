"""What the optional LLM summary accepts from Bedrock's Converse answer, and what it sends."""

from __future__ import annotations

import json

import pytest

from services.fusion.llm import findings_for_llm, parse_answer, summarise


def _converse(text: str, stop: str = "end_turn") -> dict:
    return {"output": {"message": {"role": "assistant", "content": [{"text": text}]}}, "stopReason": stop}


def test_a_json_answer_is_taken_field_by_field():
    answer = {"emotional_state": "Calm.", "medication_adherence": "Not verified.",
              "recommendations": ["Confirm adherence"], "risk_level": "low"}
    parsed = parse_answer(_converse("Here it is:\n" + json.dumps(answer)))
    assert parsed == {"emotional_state": "Calm.", "medication_adherence": "Not verified.",
                      "recommendations": ["Confirm adherence"]}  # the model cannot set the risk


@pytest.mark.parametrize("response, message", [
    ({}, "returned no text"),
    (_converse("", stop="max_tokens"), "stop reason: max_tokens"),
    (_converse("I cannot help with that."), "holds no JSON object"),
    (_converse('{"emotional_state": "Calm."}'), "not the summary asked for"),
    (_converse('{"emotional_state": "x", "medication_adherence": "y", "recommendations": []}'),
     "not the summary asked for"),
])
def test_anything_else_is_an_error_with_the_reason(response, message):
    with pytest.raises(ValueError, match=message):
        parse_answer(response)


def test_without_a_writer_the_rule_summary_is_returned_unchanged():
    import asyncio

    rule = {"emotional_state": "x", "generated_by": "rule_based"}
    assert asyncio.run(summarise(rule, {}, None, None)) is rule


def test_the_model_sees_findings_but_no_identifiers():
    fusion = {"overall_emotion": "sad", "confidence": 0.7, "risk_level": "moderate", "risk_evidence": [],
              "modalities_not_assessed": {}, "baseline": {"available": True, "changes": ["speech rate 50% below"]}}
    shown = findings_for_llm(fusion, {"verification_status": "inconclusive", "reason": "no pill detector",
                                      "steps": []})
    text = json.dumps(shown)
    assert "speech rate 50% below" in text and "sad" in text
    assert not {"patient_id", "user_id", "job_id", "s3_key"} & set(shown)


def test_the_model_gets_flag_categories_never_the_quoted_words():
    fusion = {"overall_emotion": None, "risk_level": "high", "modalities_not_assessed": {},
              "adherence": {"status": "not_assessed", "assessed": False, "reason": "no pill detector"},
              "risk_evidence": [{"factor": "transcript_suicide", "severity": "high",
                                 "evidence": 'the patient said "kill myself" at 5.0 s'}],
              "transcript_flags": [{"category": "suicide", "phrase": "kill myself", "start": 5.0,
                                    "context": "Some days I want to kill myself"}]}
    shown = findings_for_llm(fusion, None)
    assert shown["transcript_flags"] == [{"category": "suicide", "at_seconds": 5.0}]
    assert shown["medication"] == fusion["adherence"]
    assert "kill myself" not in json.dumps(shown)
