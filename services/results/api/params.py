"""What the results API's routes share: path parameters and the opaque page tokens."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from fastapi import HTTPException, Path

from shared.domain.checkin import JOB_ID_PATTERN, PATIENT_ID_PATTERN

JobId = Path(pattern=JOB_ID_PATTERN.pattern, description="e.g. job-abc123def456")
PatientIdPath = Path(pattern=PATIENT_ID_PATTERN, description="e.g. patient-001 (your clinic's id)")


def b64(data: dict[str, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def unb64(token: str) -> Any:
    try:
        return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    except (binascii.Error, ValueError):
        return None


def encode_token(after: dict[str, str]) -> str:
    return b64(after)


def decode_token(token: str, stored_key: str) -> dict[str, str]:
    after = unb64(token)
    if not isinstance(after, dict) or not isinstance(after.get("timestamp"), str):
        raise HTTPException(status_code=422, detail="next_token: not a token this API returned")
    if after.get("user_id") != stored_key:
        raise HTTPException(status_code=422, detail="next_token: it belongs to another patient's results")
    return after
