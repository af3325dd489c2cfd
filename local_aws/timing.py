"""A log of every request the server answered, for the benches: when it came, how long it took
(waits for the DynamoDB lock and the fsynced commit included), what it was and who sent it.

    SCHIZODOT_AWS_REQUEST_LOG=requests.jsonl python -m local_aws ...

One JSON line per request: `at` (epoch seconds when it arrived), `seconds`, `status`, `call` (the
X-Amz-Target, e.g. `DynamoDB_20120810.Query`, or `S3 GET` / `S3 PUT`), `table` (DynamoDB's
TableName, when there is one), `app` (the caller's `AWS_SDK_UA_APP_ID`: the stages set their
service name), `in` and `out` (body bytes). No keys, item values or object names are written: a
patient's data never reaches this log. Off unless the variable is set; the response is buffered
to be measured, so it is for benches, not for serving large media.
"""

from __future__ import annotations

import io
import json
import re
import threading
import time
from typing import Any, Callable, Iterable

from local_aws.request import read_body

_APP = re.compile(r"\bapp/([A-Za-z0-9._-]+)")
_TABLE = re.compile(rb'"TableName"\s*:\s*"([A-Za-z0-9_.-]+)"')


class RequestLog:
    """WSGI middleware writing one line per request to `path`."""

    def __init__(self, inner: Any, path: str) -> None:
        self.inner = inner
        self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the server's life
        self._lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        arrived = time.time()
        started = time.perf_counter()
        status: list[str] = []
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        table = None
        if target.startswith("DynamoDB_"):  # small JSON bodies: read here for the table's name, then passed on
            body_in = read_body(environ)
            environ["wsgi.input"], environ["CONTENT_LENGTH"] = io.BytesIO(body_in), str(len(body_in))
            table = _TABLE.search(body_in)

        def capture(line: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
            status.append(line)
            return start_response(line, headers, exc_info)

        result = self.inner(environ, capture)
        try:
            body = list(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        call = target or f"S3 {environ.get('REQUEST_METHOD', '')}"
        app = _APP.search(environ.get("HTTP_USER_AGENT", ""))
        line = {"at": round(arrived, 4), "seconds": round(time.perf_counter() - started, 4),
                "status": int(status[0].split()[0]) if status else 0, "call": call,
                "table": table.group(1).decode() if table else None, "app": app.group(1) if app else None,
                "in": int(environ.get("CONTENT_LENGTH") or 0), "out": sum(len(chunk) for chunk in body)}
        with self._lock:
            self._file.write(json.dumps(line) + "\n")
        return body
