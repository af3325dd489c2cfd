"""The server: moto's WSGI app, one DynamoDB request at a time, its state kept on disk, behind
the access guard; and the command that runs it."""

from __future__ import annotations

import argparse
import base64
import io
import logging
import os
import signal
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable

import local_aws
from local_aws.guard import AccessGuard
from local_aws.moto_internals import (
    attribute_values_as_they_are,
    attribute_values_parsed_as_they_are,
    linear_dynamodb_item_walks,
    one_event_per_multipart_completion,
    projected_queries_without_whole_item_copies,
    projections_of_what_they_reach,
)
from local_aws.request import Request, is_post_upload, read_body
from local_aws.store import DurableState, Store
from local_aws.timing import RequestLog

log = logging.getLogger("local_aws")

_DYNAMODB_READS = ("Get", "Query", "Scan", "BatchGet", "TransactGet", "Describe", "List")
_DYNAMODB_ITEM_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")
_SQS_READS = ("Get", "List")
_SQS_MESSAGE_ACTIONS = ("SendMessage", "SendMessageBatch", "ReceiveMessage", "DeleteMessage", "DeleteMessageBatch",
                        "ChangeMessageVisibility", "ChangeMessageVisibilityBatch", "PurgeQueue",
                        "StartMessageMoveTask", "CancelMessageMoveTask")
_SNS_MESSAGE_ACTIONS = ("Publish", "PublishBatch")  # their effect is the SQS messages they fan out
_READ_PREFIXES = ("Get", "List", "Describe", "Query", "Scan", "BatchGet", "Head")
# KMS calls that use a key without changing it (no store write for them).
_KMS_USES = ("Encrypt", "Decrypt", "ReEncrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext",
             "GenerateDataKeyPair", "GenerateDataKeyPairWithoutPlaintext", "GenerateRandom", "GenerateMac",
             "VerifyMac", "Sign", "Verify", "DeriveSharedSecret")


class DurableApp:
    """WSGI middleware around moto's dispatcher: commit, then answer."""

    def __init__(self, inner: Any, state: DurableState) -> None:
        self.inner = inner
        self.state = state
        self.lock = threading.Lock()

    def _service(self, environ: dict[str, Any]) -> str:
        app = self.inner.get_application(environ)
        for name, instance in self.inner.app_instances.items():
            if instance is app:
                return name
        return ""

    def classify(self, request: Request) -> str:
        """read | control | items | messages | objects | keys | reset"""
        service, action, method = request.service, request.action, request.method
        if request.path.startswith("/moto-api"):
            return "reset" if method == "POST" and request.path.rstrip("/").endswith("/reset") else "read"
        if service == "s3":
            if method in ("GET", "HEAD", "OPTIONS"):
                return "read"
            account = self.state.account_of(request.access_key)
            bucket, key = self.state.s3_target(request, account)
            if key or (method == "POST" and "delete" in urllib.parse.parse_qs(request.query, keep_blank_values=True)):
                return "objects"
            if is_post_upload(request.method, request.query, request.environ.get("CONTENT_TYPE", "")):
                return "objects"  # a browser-style POST upload: its key is in the form, not the path
            return "control"
        if service == "dynamodb":
            if action.startswith(_DYNAMODB_READS):
                return "read"
            return "items" if action in _DYNAMODB_ITEM_WRITES else "control"
        if service == "sqs":
            if action.startswith(_SQS_READS):
                return "read"
            return "messages" if action in _SQS_MESSAGE_ACTIONS else "control"
        if service == "sns" and action in _SNS_MESSAGE_ACTIONS:
            return "messages"
        if service == "kms":
            return "read" if action.startswith(_READ_PREFIXES) or action in _KMS_USES else "keys"
        if method in ("GET", "HEAD", "OPTIONS") or action.startswith(_READ_PREFIXES):
            return "read"
        return "control"

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        body = read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        request = Request(environ, body, self._service(environ))
        kind = self.classify(request)
        environ["wsgi.input"] = io.BytesIO(body)  # the dispatcher may have read it
        if kind == "read":
            return self.inner(environ, start_response)
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def capture(status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], None]:
            captured.update(status=status, headers=headers, exc_info=exc_info)
            return written.append

        result = self.inner(environ, capture)
        try:
            written.extend(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        ok = int(captured["status"].split()[0]) < 400
        try:
            with self.lock:
                self.state.store.db.execute("BEGIN")
                try:
                    if kind == "reset" and ok:
                        self.state.store.wipe()
                    elif kind == "control" and ok:
                        self.state.record_control(request)
                    elif kind == "items" and ok:
                        self.state.record_items(request)
                    elif kind == "objects":
                        self.state.record_objects(request)
                    elif kind == "keys" and ok:
                        self.state.record_keys(request)
                    self.state.record_messages()  # S3 notifications and SNS fan-out land in SQS too
                    self.state.store.db.execute("COMMIT")
                except BaseException:
                    self.state.store.db.execute("ROLLBACK")
                    raise
        except Exception:  # the change happened in memory but is not on disk: the client must not think it is
            log.exception("could not store the effect of %s %s", request.service, request.action or request.path)
            start_response("500 Internal Server Error", [("Content-Type", "application/json")])
            return [b'{"__type": "InternalFailure", "message": "the AWS server could not store the change"}']
        start_response(captured["status"], captured["headers"], captured.get("exc_info"))
        return written

    def replay(self, record: dict[str, Any]) -> int:
        environ = {
            "REQUEST_METHOD": record["method"], "PATH_INFO": record["path"], "QUERY_STRING": record["query"],
            "SERVER_NAME": "localhost", "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1",
            "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr, "wsgi.multithread": True,
            "wsgi.multiprocess": False, "wsgi.run_once": False, "wsgi.version": (1, 0), **record["environ"],
        }
        body = base64.b64decode(record["body"])
        environ["CONTENT_LENGTH"] = str(len(body))
        environ["wsgi.input"] = io.BytesIO(body)
        status: list[str] = []
        result = self.inner(environ, lambda s, h, e=None: status.append(s) or (lambda _data: None))
        for _ in result:
            pass
        if hasattr(result, "close"):
            result.close()
        return int(status[0].split()[0]) if status else 500


class AtomicDynamoDB:
    """One DynamoDB request at a time through moto.

    moto applies an UpdateItem (`ADD hits :one`, a condition expression) as a read, a
    change and a write with no lock, so two concurrent requests on one item can both
    read the same value: the check-in rate limit let 18 of 15 through across two
    processes. DynamoDB applies each request atomically; serialising DynamoDB's
    requests (they take milliseconds) gives the same here without holding up SQS's
    long polls or S3's transfers."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:  # moto's dispatcher API (get_application, ...) for DurableApp
        return getattr(self.inner, name)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if not environ.get("HTTP_X_AMZ_TARGET", "").startswith("DynamoDB_"):
            return self.inner(environ, start_response)
        with self.lock:
            return list(self.inner(environ, start_response))


def build_app(data_dir: Path | None, sync: str = "full", credentials: tuple[str, str] | None = None,
              browser_origins: tuple[str, ...] = ()) -> Any:
    """moto's WSGI app, wrapped to keep its state in `data_dir` (None: in memory) and, given
    (access key, secret key), to answer only requests signed with them (AccessGuard)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    one_event_per_multipart_completion()
    linear_dynamodb_item_walks()
    projections_of_what_they_reach()
    projected_queries_without_whole_item_copies()
    attribute_values_as_they_are()
    attribute_values_parsed_as_they_are()
    moto_app = DomainDispatcherApplication(create_backend_app)
    moto_app.debug = True
    inner = AtomicDynamoDB(moto_app)
    app: Any = inner
    if data_dir is not None:
        store = Store(Path(data_dir) / "aws.sqlite3", sync)
        app = DurableApp(inner, DurableState(store))
        started = time.monotonic()
        with app.lock:
            counts = app.state.restore(app.replay)
        log.info("restored %s from %s in %.2f s", ", ".join(f"{v} {k}" for k, v in counts.items()), store.path,
                 time.monotonic() - started)
    app = AccessGuard(app, *credentials, browser_origins) if credentials is not None else app
    request_log = os.environ.get("SCHIZODOT_AWS_REQUEST_LOG")
    return RequestLog(app, request_log) if request_log else app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(local_aws.__doc__ or "").split("\n\n")[0])
    parser.add_argument("-H", "--host", default=os.environ.get("SCHIZODOT_AWS_HOST", "127.0.0.1"),
                        help="the address to listen on (default $SCHIZODOT_AWS_HOST, else loopback only)")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", 4566)))
    parser.add_argument("--data-dir", type=Path, default=os.environ.get("SCHIZODOT_AWS_DATA_DIR") or None,
                        help="keep the state here (default $SCHIZODOT_AWS_DATA_DIR; unset: in memory, as moto)")
    parser.add_argument("--sync", choices=["full", "normal"], default=os.environ.get("SCHIZODOT_AWS_SYNC", "full"),
                        help="full: fsync every change (survives power loss); normal: survives process crashes")
    args = parser.parse_args(argv)
    credentials = (os.environ.get("AWS_ACCESS_KEY_ID", ""), os.environ.get("AWS_SECRET_ACCESS_KEY", ""))
    if not all(credentials):
        parser.error("set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY: every request's signature is checked "
                     "against them")
    os.umask(0o077)  # the store and anything else this server writes: this user's only
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds queue URLs with it
    from moto.moto_server.werkzeug_app import MotoRequestHandler
    from werkzeug.serving import run_simple

    origins = tuple(o.strip() for o in os.environ.get("SCHIZODOT_BROWSER_ORIGINS", "").split(",") if o.strip())
    app = build_app(args.data_dir, args.sync, credentials, origins)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    log.info("serving on http://%s:%d (%s)", args.host, args.port,
             f"state in {args.data_dir}" if args.data_dir else "state in memory")
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)
    return 0
