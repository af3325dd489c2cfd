"""A fault-injecting HTTP/1.1 proxy to put in front of the AWS server.

At configurable rates it answers a request itself with the error the real
service sends when throttling (DynamoDB `ProvisionedThroughputExceededException`
or `ThrottlingException`; SQS `RequestThrottled` or `ThrottlingException`, in
the JSON protocol botocore speaks or the query protocol's XML; S3 `SlowDown`),
with 500/503 in each service's format, adds latency, drops the connection
before forwarding, or forwards the request and then drops the connection
instead of answering (the write happened; the client cannot know: the
classic retry trap). Everything else is passed through byte for byte, with
keep-alive on both sides. `/moto-api` (health checks) is never faulted.

    python -m tests.faults.proxy --upstream 127.0.0.1:4566 --port 4570 --throttle 0.03 --drop-after 0.01
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import re
import threading
import uuid
from dataclasses import dataclass, field

FAULTS = ("throttle", "server_error", "drop_before", "drop_after", "latency")
_CREDENTIAL_SERVICE = re.compile(rb"Credential=[^/,\s]+/\d{8}/[^/]+/([^/]+)/", re.IGNORECASE)


@dataclass
class FaultRates:
    """Probabilities per request (each drawn on its own) and the added latency range."""

    throttle: float = 0.0
    server_error: float = 0.0
    drop_before: float = 0.0
    drop_after: float = 0.0
    latency: float = 0.0
    latency_seconds: tuple[float, float] = (0.05, 0.5)

    @classmethod
    def uniform(cls, rate: float, **overrides: float) -> "FaultRates":
        return cls(**{**{name: rate for name in FAULTS}, **overrides})


@dataclass
class Request:
    head: bytes
    body: bytes
    method: str
    path: str
    headers: dict[str, str]
    service: str = field(default="s3")


class FaultProxy:
    """The proxy, on its own event loop in a background thread (or `serve()` in yours)."""

    def __init__(self, upstream: tuple[str, int], rates: FaultRates | None = None, *, seed: int | None = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream = upstream
        self.rates = rates or FaultRates()
        self.random = random.Random(seed)
        self.host = host
        self.port = port
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()  # (service, fault or "ok")
        # Requests the server carried out whose answer was dropped, by operation: where the retry trap can fire.
        self.dropped_answers: collections.Counter[str] = collections.Counter()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._handlers: set[asyncio.Task] = set()  # held here: a handler whose client left may still await its answer

    # -- running -------------------------------------------------------------

    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._connection, self.host, self.port, limit=2 ** 20)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> "FaultProxy":
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fault proxy did not start")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        async def close() -> None:
            if self._server is not None:
                self._server.close()
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def set_rates(self, rates: FaultRates) -> None:
        with self._lock:
            self.rates = rates

    def summary(self) -> dict[str, dict[str, int]]:
        table: dict[str, dict[str, int]] = collections.defaultdict(dict)
        for (service, fault), count in sorted(self.counts.items()):
            table[service][fault] = count
        return dict(table)

    # -- one client connection ---------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while True:
                request = await _read_request(reader, writer)
                if request is None:
                    return
                fault = self._choose(request)
                self.counts[(request.service, fault or "ok")] += 1
                if fault == "drop_before":
                    return
                if fault in ("throttle", "server_error"):
                    writer.write(self._error(request, fault))
                    await writer.drain()
                    continue
                if fault == "latency":
                    await asyncio.sleep(self.random.uniform(*self.rates.latency_seconds))
                if upstream is None:
                    upstream = await asyncio.open_connection(*self.upstream, limit=2 ** 20)
                upstream[1].write(request.head + request.body)
                await upstream[1].drain()
                response, close = await _read_response(upstream[0], request.method)
                if fault == "drop_after":
                    operation = request.headers.get("x-amz-target", "").rsplit(".", 1)[-1] or request.method
                    self.dropped_answers[f"{request.service} {operation}"] += 1
                    return  # the server did the work; the client never hears of it
                writer.write(response)
                await writer.drain()
                if close:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            return  # either side went away (the AWS server was killed, say): the client sees a dropped connection
        except asyncio.CancelledError:
            raise
        finally:
            writer.close()
            if upstream is not None:
                upstream[1].close()

    def _choose(self, request: Request) -> str | None:
        if request.path.startswith("/moto-api"):
            return None
        with self._lock:
            rates = self.rates
        for name in FAULTS:
            if self.random.random() < getattr(rates, name):
                return name
        return None

    def _error(self, request: Request, fault: str) -> bytes:
        """The error response the real service sends, in its wire format."""
        request_id = str(uuid.uuid4())
        headers = {"x-amzn-RequestId": request_id, "x-amz-request-id": request_id}
        if fault == "throttle":
            status = 400
            if request.service == "dynamodb":
                code = self.random.choice(["ProvisionedThroughputExceededException", "ThrottlingException"])
                namespace = "com.amazonaws.dynamodb.v20120810" if code.startswith("Prov") else "com.amazon.coral.availability"
                body = json.dumps({"__type": f"{namespace}#{code}", "message": "Rate of requests exceeds the allowed throughput."})
                headers["Content-Type"] = "application/x-amz-json-1.0"
            elif request.service in ("sqs", "sqs-query"):
                code = self.random.choice(["RequestThrottled", "ThrottlingException"])
                body, extra = _sqs_error(request.service, code, "Sender", "Rate exceeded")
                headers.update(extra)
            else:
                status, code = 503, "SlowDown"
                body = _s3_error(code, "Please reduce your request rate.", request_id)
                headers["Content-Type"] = "application/xml"
        else:
            status = self.random.choice([500, 503])
            if request.service == "dynamodb":
                code = "InternalServerError" if status == 500 else "ServiceUnavailable"
                body = json.dumps({"__type": f"com.amazonaws.dynamodb.v20120810#{code}", "message": "injected"})
                headers["Content-Type"] = "application/x-amz-json-1.0"
            elif request.service in ("sqs", "sqs-query"):
                code = "InternalError" if status == 500 else "ServiceUnavailable"
                body, extra = _sqs_error(request.service, code, "Receiver", "injected")
                headers.update(extra)
            else:
                code = "InternalError" if status == 500 else "ServiceUnavailable"
                body = _s3_error(code, "injected", request_id)
                headers["Content-Type"] = "application/xml"
        payload = b"" if request.method == "HEAD" else body.encode()
        headers["Content-Length"] = str(len(payload))
        reason = {400: "Bad Request", 500: "Internal Server Error", 503: "Service Unavailable"}[status]
        head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        return head.encode() + payload


def _sqs_error(service: str, code: str, fault_type: str, message: str) -> tuple[str, dict[str, str]]:
    if service == "sqs":  # the JSON protocol, awsQueryCompatible: the code travels in a header too
        return (json.dumps({"__type": f"com.amazonaws.sqs#{code}", "message": message}),
                {"Content-Type": "application/x-amz-json-1.0", "x-amzn-query-error": f"{code};{fault_type}"})
    body = (f"<?xml version=\"1.0\"?><ErrorResponse><Error><Type>{fault_type}</Type><Code>{code}</Code>"
            f"<Message>{message}</Message></Error><RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>")
    return body, {"Content-Type": "text/xml"}


def _s3_error(code: str, message: str, request_id: str) -> str:
    return (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message>"
            f"<RequestId>{request_id}</RequestId><HostId>fault-proxy</HostId></Error>")


async def _read_request(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Request | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None  # the client closed the connection between requests
    lines = head.decode("latin-1").split("\r\n")
    method, path = lines[0].split(" ")[:2]
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:] if line)}
    if headers.get("expect", "").lower() == "100-continue":
        # Answer for the server, so the body follows at once; the server never sees the header.
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        head = b"\r\n".join(line for line in head.split(b"\r\n") if not line.lower().startswith(b"expect:"))
        headers.pop("expect")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = await _read_chunked(reader)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0") or 0))
    request = Request(head, body, method, path, headers)
    request.service = _service(request)
    return request


def _service(request: Request) -> str:
    target = request.headers.get("x-amz-target", "")
    if target.startswith("DynamoDB"):
        return "dynamodb"
    if target.startswith("AmazonSQS"):
        return "sqs"
    found = _CREDENTIAL_SERVICE.search(request.headers.get("authorization", "").encode())
    if found and found.group(1) == b"sqs" or request.body.startswith(b"Action="):
        return "sqs-query"
    return "s3"


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    raw = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        raw += size_line
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            while True:  # trailers, then the empty line
                line = await reader.readuntil(b"\r\n")
                raw += line
                if line == b"\r\n":
                    return raw
        raw += await reader.readexactly(size + 2)


async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[bytes, bool]:
    """The whole response as bytes, and whether the connection closes after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status = lines[0].split(" ")[:2]
    headers = {name.strip().lower(): value.strip() for name, _, value in
               (line.partition(":") for line in lines[1:] if line)}
    close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
    if method == "HEAD" or status in ("204", "304") or status.startswith("1"):
        return head, close
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return head + await _read_chunked(reader), close
    if "content-length" in headers:
        return head + await reader.readexactly(int(headers["content-length"])), close
    return head + await reader.read(), True  # delimited by the end of the connection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="host:port of the AWS server")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seed", type=int, default=None)
    for name in FAULTS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=float, default=0.0, metavar="RATE")
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    proxy = FaultProxy((host or "127.0.0.1", int(port)), FaultRates(**{n: getattr(args, n) for n in FAULTS}),
                       seed=args.seed, port=args.port)

    async def run() -> None:
        await proxy.serve()
        print(f"fault proxy on 127.0.0.1:{proxy.port} -> {args.upstream}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        print(json.dumps(proxy.summary(), indent=2))


if __name__ == "__main__":
    main()
