"""structlog JSON logs: one line per event with timestamp, level, service,
stage, job_id, trace_id and span_id, and no PHI.

Bind per-message context with `structlog.contextvars.bound_contextvars(job_id=...)`;
every log line inside carries it, including lines from executor threads that
copy the context (see `shared.runtime.worker.run_blocking`). Standard-library loggers
(uvicorn, botocore) go through the same JSON renderer.

PHI: a `patient_id`/`user_id` field becomes `patient_ref`, a keyed pseudonym
(HMAC-SHA256 with `SCHIZODOT_PSEUDONYM_KEY`, so the same patient has the same
reference in every service); patient ids inside upload keys
(`uploads/<patient>/...`) and the EHR's own names of its media
(`incoming/<clinic>/<name>`) in any text, exception text included, are replaced
the same way; transcript fields are dropped.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import sys
from typing import Any

import structlog
from opentelemetry import trace

_PATIENT_FIELDS = ("patient_id", "user_id")
_DROPPED_FIELDS = ("transcript", "transcription")
# Upload keys name the patient (shared.domain.checkin.upload_key): uploads/<patient>/<job>/...
_UPLOAD_KEY_PATIENT = re.compile(r"(uploads/)([A-Za-z0-9_.-]{3,170})(/)")  # the patient key: clinic.patient
# An EHR's media keys (shared.runtime.infra.EHR_MEDIA_PREFIX) are named by the EHR and may carry anything,
# a patient's name included: incoming/<clinic>/<whatever>, up to a space, a quote or a bracket.
_EHR_KEY_NAME = re.compile(r"(incoming/[a-z0-9][a-z0-9-]{1,62}/)([^\s\"'<>()\[\]{},]+)")
_KEY_PREFIXES = ("uploads/", "incoming/")
_key = secrets.token_bytes(32)  # replaced by configure_logging; random means "not linkable across processes"


def pseudonymise(patient_id: str) -> str:
    """A stable reference for a patient that does not reveal the id."""
    digest = hmac.new(_key, str(patient_id).encode(), hashlib.sha256).hexdigest()
    return f"pt-{digest[:16]}"


def redact(text: str) -> str:
    """`text` with the patient ids it is known to carry (upload keys, EHR media keys) pseudonymised."""
    text = _UPLOAD_KEY_PATIENT.sub(lambda m: f"{m.group(1)}{pseudonymise(m.group(2))}{m.group(3)}", text)
    return _EHR_KEY_NAME.sub(lambda m: f"{m.group(1)}{pseudonymise(m.group(2))}", text)


def _redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value) if any(prefix in value for prefix in _KEY_PREFIXES) else value
    if isinstance(value, dict):
        return {k: _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_redact_value(v) for v in value]
    return value


def _scrub_phi(_logger: object, _method: str, event: dict) -> dict:
    for name in _PATIENT_FIELDS:
        if name in event:
            value = event.pop(name)
            event["patient_ref"] = pseudonymise(value) if value else value
    for name in _DROPPED_FIELDS:
        if name in event:
            event[name] = "[removed]"
    return {k: _redact_value(v) for k, v in event.items()}


def _add_trace_ids(_logger: object, _method: str, event: dict) -> dict:
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event["trace_id"] = format(context.trace_id, "032x")
        event["span_id"] = format(context.span_id, "016x")
    return event


class _CurrentStdout:
    """Writes to whatever sys.stdout is at the time of writing, so loggers made
    once keep working when stdout is swapped (test capture, daemon redirection)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)

    def flush(self) -> None:
        sys.stdout.flush()


def configure_logging(
    service: str, level: str = "INFO", *, stage: str | None = None, pseudonym_key: str | None = None
) -> None:
    global _key
    if pseudonym_key:
        _key = pseudonym_key.encode()
    shared_processors = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_ids,
    ]
    handler = logging.StreamHandler(_CurrentStdout())
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared_processors, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _scrub_phi,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "aiobotocore", "urllib3", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    structlog.configure(
        processors=[
            *shared_processors,
            structlog.processors.format_exc_info,
            _scrub_phi,  # last, so exception text is scrubbed too
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=_CurrentStdout()),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service, **({"stage": stage} if stage else {}))
    if not pseudonym_key:
        structlog.get_logger().warning(
            "SCHIZODOT_PSEUDONYM_KEY is not set: patient references in logs are not comparable across processes"
        )
