"""The request and response bodies of the patient check-in API (services/ingest/patient/router.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from services.ingest.patient.script import CheckinScript
from shared.domain.timeline import TimelineField

UPLOAD_ID = r"^[A-Za-z0-9._~=+/-]{1,1024}$"

State = Literal["awaiting_recording", "received", "analysing", "done", "not_analysed", "closed"]


class StatusView(BaseModel):
    state: State
    progress: int = Field(0, ge=0, le=100)


class SessionView(StatusView):
    checkin_id: str = Field(description="the job id: where the page keeps an unsent recording on the device")
    script: CheckinScript
    max_bytes: int
    part_bytes: int
    accepted_types: tuple[str, ...]


class UploadStart(BaseModel):
    content_type: str = Field(min_length=1, max_length=200)
    size: int = Field(ge=1)
    timeline: TimelineField | None = Field(None, description="when the page showed each prompt and dosing step, "
                                           "in ms from the start of the recording (shared.domain.timeline)")


class UploadContinue(BaseModel):
    upload_id: str = Field(pattern=UPLOAD_ID)
    size: int = Field(ge=1)


class SignedPart(BaseModel):
    number: int
    size: int
    url: str


class UploadPlan(BaseModel):
    upload_id: str
    size: int
    part_bytes: int
    content_type: str | None = None
    parts: list[SignedPart] = Field(description="the parts still to send, with URLs")
    send_token: bool = Field(False, description="send the link's token with each part (the parts go to this API)")
    done: list[int] = Field(default_factory=list, description="parts S3 already holds")
    expires_in: int


class PartReceived(BaseModel):
    number: int
    size: int
