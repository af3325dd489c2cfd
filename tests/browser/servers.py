"""Serving an app built inside its own event loop (its aiobotocore clients are
bound to that loop), on a free port, from a background thread."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

import uvicorn
from fastapi import FastAPI

AppFactory = Callable[[], AbstractAsyncContextManager[FastAPI]]


class BackgroundServer:
    def __init__(self, factory: AppFactory) -> None:
        self._factory = factory
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}"
        self._server: uvicorn.Server | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to the test thread
            self._error = error
            self._ready.set()

    async def _serve(self) -> None:
        async with self._factory() as app:
            self._server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
            self._server.capture_signals = contextlib.nullcontext
            serving = asyncio.create_task(self._server.serve(sockets=[self._sock]))
            while not self._server.started and not serving.done():
                await asyncio.sleep(0.02)
            self._ready.set()
            await serving

    def __enter__(self) -> "BackgroundServer":
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise RuntimeError(f"the test server did not start: {self._error}") from self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(15)


__all__ = ["BackgroundServer"]
