"""What the HTTP APIs (ingest, results) share: 422s a person can read."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

# Said in words instead of echoing a regular expression.
FIELD_RULES = {
    "patient_id": "must be 3 to 100 letters, digits, '_' or '-'",
    "job_id": "must look like job-<12 hexadecimal digits>",
}
_LOCATIONS = ("body", "query", "path", "header")


def install_readable_validation_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def readable_validation_error(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = []
        for item in error.errors():
            parts = [str(part) for part in item["loc"] if part not in _LOCATIONS]
            field = ".".join(parts) or "request"
            rule = FIELD_RULES.get(parts[-1]) if parts and item["type"] == "string_pattern_mismatch" else None
            problems.append(f"{field}: {rule or item['msg'].removeprefix('Value error, ')}")
        return JSONResponse(status_code=422, content={"detail": "; ".join(problems)})
