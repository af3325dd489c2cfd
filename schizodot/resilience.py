"""How the CLI and the demo ride out a server's restart: transient failures are
retried with capped exponential back-off and full jitter (tenacity) until a
deadline; only a failure that outlasts it is reported, as one readable line.

Transient: connection refused, reset or closed, timeouts, HTTP 502/503/504 and
429 (waiting at least what `Retry-After` asks). The clients speak only to the
APIs (and S3's presigned POST); an API whose AWS store is away after botocore's
retries answers 503 with Retry-After (shared.runtime.http), which is retried here too.
"""

from __future__ import annotations

import email.utils
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_DEADLINE_SECONDS = 120.0
DEADLINE_VARIABLE = "SCHIZODOT_CLIENT_RETRY_DEADLINE"


class ServiceUnreachable(Exception):
    """A service kept failing transiently for longer than the deadline."""


class _TransientStatus(Exception):
    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} {response.reason_phrase}")
        self.response = response


@dataclass(frozen=True)
class RetryPolicy:
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    first_wait_seconds: float = 0.5
    max_wait_seconds: float = 10.0

    @classmethod
    def from_env(cls, deadline: float | None = None) -> "RetryPolicy":
        if deadline is None:
            configured = os.environ.get(DEADLINE_VARIABLE, "").strip()
            try:
                deadline = float(configured) if configured else DEFAULT_DEADLINE_SECONDS
            except ValueError:
                raise ServiceUnreachable(f"{DEADLINE_VARIABLE}={configured!r} is not a number of seconds") from None
        return cls(deadline_seconds=max(deadline, 0.0))

    def _wait(self) -> Callable[[tenacity.RetryCallState], float]:
        backoff = tenacity.wait_random_exponential(multiplier=self.first_wait_seconds, max=self.max_wait_seconds)

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            asked = _retry_after(error.response) if isinstance(error, _TransientStatus) else 0.0
            left = self.deadline_seconds - (time.monotonic() - state.start_time)
            return max(0.0, min(max(backoff(state), asked), left))

        return wait

    def retrying(self, is_transient: Callable[[BaseException], bool]) -> dict[str, Any]:
        return {"retry": tenacity.retry_if_exception(is_transient), "wait": self._wait(),
                "stop": tenacity.stop_after_delay(self.deadline_seconds), "reraise": True}


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("Retry-After", "").strip()
    if not value:
        return 0.0
    if value.isdigit():
        return float(value)
    when = email.utils.parsedate_to_datetime(value) if value else None
    return max(0.0, when.timestamp() - time.time()) if when else 0.0


def _http_transient(error: BaseException) -> bool:
    return isinstance(error, (httpx.TransportError, _TransientStatus))


def http_request(http: httpx.Client, method: str, url: str, *, policy: RetryPolicy, what: str,
                 retry_statuses: frozenset[int] = RETRIED_STATUSES,
                 retry_when: Callable[[httpx.Response], bool] | None = None, **kwargs: Any) -> httpx.Response:
    """One HTTP request, retried while the failure is transient; the response
    otherwise (a 4xx is the caller's to read). `retry_when` names other answers
    that mean "not yet" (waited for like a 503, Retry-After included). Non-idempotent
    requests must carry an idempotency key before they come here."""
    try:
        for attempt in tenacity.Retrying(**policy.retrying(_http_transient)):
            with attempt:
                response = http.request(method, url, **kwargs)
                if response.status_code in retry_statuses or (retry_when is not None and retry_when(response)):
                    raise _TransientStatus(response)
                return response
    except _TransientStatus as error:
        raise ServiceUnreachable(f"{what}: the server kept answering {error} for "
                                 f"{policy.deadline_seconds:.0f} s") from None
    except httpx.TransportError as error:
        raise ServiceUnreachable(f"{what}: cannot reach {httpx.URL(url).netloc.decode()} "
                                 f"({describe(error)}) for {policy.deadline_seconds:.0f} s") from None
    raise AssertionError("unreachable")  # tenacity either returns or raises


def describe(error: BaseException) -> str:
    """An error in a few words, without a traceback."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__
