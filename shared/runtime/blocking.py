"""Blocking work (model inference, synchronous SDK calls) off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

T = TypeVar("T")


async def run_blocking(executor: Executor | None, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn` in `executor` (None: the loop's default threads), keeping the log context."""
    context = contextvars.copy_context()
    return await asyncio.get_running_loop().run_in_executor(executor, functools.partial(context.run, fn, *args))
