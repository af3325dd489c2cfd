"""An optional LLM-written clinical summary (Amazon Bedrock, Converse API, via boto3).

Used only when `FUSION_LLM_ENABLED=true`. The model rewrites the wording of the
rule-based summary from the fusion findings; it never decides anything: the
risk level and the risk assessment sentence stay the rules' own, and no patient
identifier is sent. Any failure (no access, throttling, a timeout, an answer
that is not the JSON asked for) leaves the rule-based summary in place with
`llm_error` saying why; see `summarise`.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import boto3
import structlog
from botocore.config import Config
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.fusion.settings import FusionSettings
from shared.runtime.blocking import run_blocking
from shared.settings import CommonSettings

log = structlog.get_logger()

_INSTRUCTIONS = (
    "You write short clinical summaries of a schizophrenia-care video check-in for the patient's clinician. "
    "You get the automated findings as JSON. Answer with one JSON object and nothing else, with the keys "
    '"emotional_state" (one or two sentences), "medication_adherence" (one sentence) and '
    '"recommendations" (a list of 1 to 5 short actions). Use only the findings given; say plainly what was '
    "not assessed; do not diagnose and do not change the risk level."
)


class SummaryWriter(Protocol):
    model_id: str

    async def write(self, findings: dict[str, Any]) -> dict[str, Any]: ...


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")

    emotional_state: str = Field(min_length=1, max_length=2000)
    medication_adherence: str = Field(min_length=1, max_length=2000)
    recommendations: list[str] = Field(min_length=1, max_length=10)


class BedrockSummaryWriter:
    """Bedrock's Converse API through boto3, run off the event loop."""

    def __init__(self, settings: FusionSettings, aws: CommonSettings) -> None:
        self.model_id = settings.llm_model_id
        self._max_tokens = settings.llm_max_tokens
        options: dict[str, Any] = {"region_name": aws.aws_region}
        if aws.aws_endpoint_url:
            options["endpoint_url"] = aws.aws_endpoint_url
        self._client = boto3.session.Session().client(
            "bedrock-runtime",
            config=Config(
                connect_timeout=5, read_timeout=settings.llm_timeout_seconds,
                retries={"mode": "standard", "max_attempts": settings.llm_max_attempts},
            ),
            **options,
        )

    async def write(self, findings: dict[str, Any]) -> dict[str, Any]:
        response = await run_blocking(None, self._converse, json.dumps(findings, default=str))
        return parse_answer(response)

    def _converse(self, findings_json: str) -> dict[str, Any]:
        return self._client.converse(
            modelId=self.model_id,
            system=[{"text": _INSTRUCTIONS}],
            messages=[{"role": "user", "content": [{"text": findings_json}]}],
            inferenceConfig={"maxTokens": self._max_tokens, "temperature": 0.2},
        )


def parse_answer(response: dict[str, Any]) -> dict[str, Any]:
    """The summary fields from a Converse response; ValueError when it is not what was asked for."""
    blocks = (((response or {}).get("output") or {}).get("message") or {}).get("content") or []
    text = "".join(block.get("text", "") for block in blocks if isinstance(block, dict)).strip()
    if not text:
        raise ValueError(f"the model returned no text (stop reason: {(response or {}).get('stopReason')})")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("the model's answer holds no JSON object")
    try:
        return _Answer.model_validate(json.loads(text[start : end + 1])).model_dump()
    except (json.JSONDecodeError, ValidationError) as error:
        raise ValueError(f"the model's answer is not the summary asked for: {error}") from error


def findings_for_llm(fusion: dict[str, Any], compliance: dict[str, Any] | None) -> dict[str, Any]:
    """What the model is shown: findings only, no identifiers and no quoted patient speech.

    Transcript flags go as their categories and times: the rule-based `flags`
    (with the quotes) stay in the summary whatever the model writes."""
    keep = ("overall_emotion", "overall_emotion_basis", "confidence", "emotional_consistency", "face_emotion",
            "voice_emotion", "emotion_not_used", "risk_level", "modalities_not_assessed")
    baseline = fusion.get("baseline") or {}
    flagged = [{"category": f["category"], "at_seconds": f.get("start")} for f in fusion.get("transcript_flags") or []]
    return {
        **{k: fusion.get(k) for k in keep},
        "risk_evidence": [e for e in fusion.get("risk_evidence") or [] if not e["factor"].startswith("transcript_")],
        "medication": fusion.get("adherence") or {k: (compliance or {}).get(k) for k in ("verification_status", "reason")},
        "transcript_flags": flagged,
        "change_from_baseline": baseline.get("changes") if baseline.get("available") else "no baseline yet",
    }


async def summarise(
    rule_summary: dict[str, Any], fusion: dict[str, Any], compliance: dict[str, Any] | None,
    writer: SummaryWriter | None,
) -> dict[str, Any]:
    """The LLM summary when a writer is configured and succeeds, else the rule-based one (saying why)."""
    if writer is None:
        return rule_summary
    try:
        answer = await writer.write(findings_for_llm(fusion, compliance))
    except Exception as error:  # any failure: the rules' summary stands
        reason = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        log.warning("LLM summary failed; rule-based summary kept", model_id=writer.model_id, error=reason)
        return {**rule_summary, "llm_model_id": writer.model_id, "llm_error": reason}
    return {
        **rule_summary,
        **answer,
        "generated_by": f"bedrock:{writer.model_id}",
        "rule_based_summary": {k: rule_summary[k] for k in ("emotional_state", "medication_adherence",
                                                            "recommendations")},
    }
