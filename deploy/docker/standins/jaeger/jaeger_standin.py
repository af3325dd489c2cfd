"""A stand-in for jaegertracing/all-in-one where that image cannot be pulled.

It receives OTLP/HTTP on :4318 (what the services export to, as Jaeger's own
collector does), keeps the spans in memory, and answers the part of Jaeger's
HTTP query API that scripts use, on :16686: /api/services, /api/traces?service=
and /api/traces/<trace id>, in Jaeger's JSON shape. It has no UI and no storage.
The receiver is the test suite's own (tests/integration/otlp_receiver.py).
"""

from __future__ import annotations

import json
import os
import signal
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from otlp_receiver import OtlpReceiver, ReceivedSpan

OTLP_PORT = int(os.environ.get("STANDIN_OTLP_HTTP_PORT", "4318"))
QUERY_PORT = int(os.environ.get("STANDIN_QUERY_PORT", "16686"))
NOTICE = ("SchizoDot's Jaeger stand-in: OTLP/HTTP on :4318, Jaeger's query API "
          "(/api/services, /api/traces) on :16686; no UI.\n")


def _tags(values: dict[str, Any]) -> list[dict[str, Any]]:
    tags = []
    for key, value in values.items():
        kind = ("bool" if isinstance(value, bool) else "int64" if isinstance(value, int)
                else "float64" if isinstance(value, float) else "string")
        tags.append({"key": key, "type": kind, "value": value if kind != "string" else str(value)})
    return tags


def jaeger_traces(spans: list[ReceivedSpan]) -> list[dict[str, Any]]:
    """Spans grouped into traces in the JSON shape Jaeger's query service returns."""
    by_trace: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span)
    traces = []
    for trace_id, members in by_trace.items():
        processes: dict[str, dict[str, Any]] = {}
        process_of: dict[str, str] = {}
        out = []
        for span in sorted(members, key=lambda s: s.start_ns):
            if span.service not in process_of:
                process_of[span.service] = f"p{len(process_of) + 1}"
                processes[process_of[span.service]] = {"serviceName": span.service, "tags": _tags(span.resource)}
            references = [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": span.parent_span_id}] \
                if span.parent_span_id else []
            references += [{"refType": "FOLLOWS_FROM", "traceID": t, "spanID": s} for t, s, _ in span.links]
            out.append({
                "traceID": trace_id, "spanID": span.span_id, "operationName": span.name,
                "references": references, "startTime": span.start_ns // 1000,
                "duration": max(0, span.end_ns - span.start_ns) // 1000,
                "tags": _tags({**span.attributes, "span.kind": span.kind.lower()}),
                "logs": [{"timestamp": span.start_ns // 1000, "fields": _tags({"event": name, **attrs})}
                         for name, attrs in span.events],
                "processID": process_of[span.service], "warnings": None,
            })
        traces.append({"traceID": trace_id, "spans": out, "processes": processes, "warnings": None})
    return traces


def main() -> None:
    receiver = OtlpReceiver(port=OTLP_PORT, host="0.0.0.0").start()

    class Query(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            url = urlparse(self.path)
            query = parse_qs(url.query)
            spans = receiver.received()
            if url.path == "/api/services":
                data: Any = sorted({span.service for span in spans})
            elif url.path == "/api/traces":
                service = query.get("service", [""])[0]
                limit = int(query.get("limit", ["20"])[0])
                wanted = {span.trace_id for span in spans if span.service == service}
                data = [t for t in jaeger_traces([s for s in spans if s.trace_id in wanted])][-limit:]
            elif url.path.startswith("/api/traces/"):
                data = jaeger_traces(receiver.trace(url.path.rsplit("/", 1)[1]))
            else:
                self._send(200, NOTICE.encode(), "text/plain; charset=utf-8")
                return
            body = {"data": data, "total": len(data), "limit": 0, "offset": 0, "errors": None}
            self._send(200, json.dumps(body).encode(), "application/json")

        def _send(self, status: int, payload: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("0.0.0.0", QUERY_PORT), Query)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(NOTICE, end="", flush=True)
    stop.wait()
    server.shutdown()
    receiver.stop()


if __name__ == "__main__":
    main()
