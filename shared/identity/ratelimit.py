"""Limits per credential, correct across any number of API processes.

A fixed window per credential: one DynamoDB item per (credential, window), a
counter incremented with an atomic `ADD` that returns the new count, expiring by
the table's TTL. Every replica behind the same port counts in the same item, so
`limit` per `window_seconds` holds for the deployment, not per process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    count: int
    retry_after: int  # seconds until the window ends (for Retry-After)


class RateLimiter(Protocol):
    async def hit(self, bucket: str, limit: int, window_seconds: int) -> Verdict: ...


def _window(window_seconds: int, now: float) -> tuple[int, int]:
    start = int(now // window_seconds) * window_seconds
    return start, start + window_seconds


class DynamoRateLimiter:
    """`RateLimiter` on `SchizodotRateLimits` (key `bucket`, TTL `expires_at`)."""

    def __init__(self, dynamodb: Any, table: str, clock=time.time) -> None:
        self._db = dynamodb
        self._table = table
        self._clock = clock

    async def hit(self, bucket: str, limit: int, window_seconds: int) -> Verdict:
        now = self._clock()
        start, end = _window(window_seconds, now)
        response = await self._db.update_item(
            TableName=self._table, Key={"bucket": {"S": f"{bucket}#{start}"}},
            UpdateExpression="ADD hits :one SET expires_at = if_not_exists(expires_at, :expires)",
            ExpressionAttributeValues={":one": {"N": "1"}, ":expires": {"N": str(end + window_seconds)}},
            ReturnValues="UPDATED_NEW")
        count = int(response["Attributes"]["hits"]["N"])
        return Verdict(count <= limit, count, max(1, int(end - now + 0.999)))


class MemoryRateLimiter:
    """`RateLimiter` in memory (one process: tests)."""

    def __init__(self, clock=time.time) -> None:
        self._counts: dict[str, int] = {}
        self._clock = clock

    async def hit(self, bucket: str, limit: int, window_seconds: int) -> Verdict:
        now = self._clock()
        start, end = _window(window_seconds, now)
        key = f"{bucket}#{start}"
        self._counts[key] = self._counts.get(key, 0) + 1
        return Verdict(self._counts[key] <= limit, self._counts[key], max(1, int(end - now + 0.999)))
