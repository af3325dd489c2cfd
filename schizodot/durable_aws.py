"""moto's AWS-API server with its state kept on disk: the embedded stack's (and
compose's) local AWS survives a restart, a SIGKILL and a reboot.

    python -m schizodot.durable_aws -H 127.0.0.1 -p 4566 --data-dir .stack-data/aws

Why this and not moto's recorder or another server: see the README section
"Durable embedded data". In short, the store holds the *current state* of every
entity a request touched (an after-image), never the requests themselves, so
a restart costs time in proportion to what is stored, not to history, and
nothing random is replayed: SQS message ids and receipt handles, S3 ETags and
DynamoDB items come back exactly as they were.

- DynamoDB: after a write that succeeded, the items it named (PutItem,
  UpdateItem, DeleteItem, BatchWriteItem, TransactWriteItems) are read back
  from moto and stored as DynamoDB JSON, or removed.
- SQS: after any request that may change messages (sends, receives, deletes,
  visibility changes, purges, and S3 notifications or SNS fan-out, which moto
  delivers internally), every queue is compared with what is stored and the
  messages that changed are stored with their receive count, visibility,
  receipt handles and DLQ moves. Visibility times are wall-clock, so messages
  in flight when the server stopped are redelivered when their timeout lapses,
  and a worker that outlived the restart can still delete with its receipt handle.
- S3: after a write to an object, that object (all its versions, moto's own
  pickled form) is stored or removed; multipart uploads in progress are kept
  too (each upload's description and each part once), so an upload resumes
  from ListParts after a restart.
- KMS: after a request that changes keys or aliases, every key of that
  account and region (its id, key material, rotation, aliases and tags) is
  stored, and put back before anything else: a replayed CreateKey would make
  a key with a new id and new material, orphaning what names the old one.
- Everything else that changes state (creating tables, queues, buckets, their
  attributes, notifications) is kept as the request itself and replayed at
  start-up, in order, before the data is put back; a repeated identical request
  replaces its earlier copy, so the log stays small (a request that then fails
  for want of what a later one makes is replayed again after the rest). The
  headers that shape such a request (`x-amz-bucket-object-lock-enabled`, say)
  are kept with it.

The response is sent only after the change is committed to SQLite (WAL,
`synchronous=FULL` by default: each commit is fsynced, so a power cut loses
nothing acknowledged; `--sync normal` survives process crashes only).
Only the standard library and moto (with cryptography, its dependency) are
imported: compose runs this file in moto's own image.
"""

from __future__ import annotations

import argparse
import base64
import calendar
import hashlib
import hmac
import io
import json
import logging
import os
import pickle
import re
import signal
import sqlite3
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable, Iterable

log = logging.getLogger("durable_aws")

FORMAT_VERSION = "1"
# Receipt handles of deleted messages are kept this long, so that a delete
# retried across a restart still succeeds (SQS visibility is at most 12 h).
DELETED_RECEIPT_TTL_SECONDS = 12 * 3600

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
# Request headers a replayed control request needs (service routing, protocol, account); and every
# other x-amz-* header but the per-request ones, since some shape what is made (S3's
# x-amz-bucket-object-lock-enabled, x-amz-object-ownership, x-amz-acl on CreateBucket).
_KEPT_HEADERS = ("HTTP_AUTHORIZATION", "HTTP_X_AMZ_TARGET", "CONTENT_TYPE", "HTTP_HOST", "HTTP_X_AMZ_DATE",
                 "HTTP_X_AMZ_CONTENT_SHA256", "HTTP_X_AMZN_QUERY_MODE", "HTTP_CONTENT_MD5")
_PER_REQUEST_HEADERS = ("HTTP_X_AMZ_SECURITY_TOKEN", "HTTP_X_AMZ_USER_AGENT", "HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM",
                        "HTTP_X_AMZ_CHECKSUM_CRC32", "HTTP_X_AMZ_CHECKSUM_CRC32C", "HTTP_X_AMZ_CHECKSUM_SHA1",
                        "HTTP_X_AMZ_CHECKSUM_SHA256", "HTTP_X_AMZ_DECODED_CONTENT_LENGTH")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/([^/]+)/([^/]+)/")


class Request:
    """What the store needs to know about one request."""

    def __init__(self, environ: dict[str, Any], body: bytes, service: str) -> None:
        self.environ = environ
        self.body = body
        self.service = service
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.path = environ.get("PATH_INFO", "") or "/"
        self.query = environ.get("QUERY_STRING", "")
        access_key, region = self._credential()
        self.access_key = access_key
        self.region = region
        self.action = self._action()

    def _credential(self) -> tuple[str, str]:
        found = _CREDENTIAL.search(self.environ.get("HTTP_AUTHORIZATION", ""))
        if found:
            return found.group(1), found.group(2)
        query = urllib.parse.parse_qs(self.query)
        credential = (query.get("X-Amz-Credential") or [""])[0].split("/")
        if len(credential) >= 3:
            return credential[0], credential[2]
        return "", "us-east-1"

    def _action(self) -> str:
        target = self.environ.get("HTTP_X_AMZ_TARGET", "")
        if target:
            return target.rsplit(".", 1)[-1]
        if self.environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded") and self.body:
            form = urllib.parse.parse_qs(self.body.decode("utf-8", "replace"))
            if "Action" in form:
                return form["Action"][0]
        query = urllib.parse.parse_qs(self.query)
        return (query.get("Action") or [""])[0]

    def json_body(self) -> dict[str, Any]:
        try:
            value = json.loads(self.body or b"{}")
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


class Store:
    """The SQLite file: control requests, DynamoDB items, S3 objects, SQS messages."""

    def __init__(self, path: Path, sync: str = "full") -> None:
        _private_directory(path.parent)
        for name in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if name.exists():
                name.chmod(0o600)  # a store made before files were private
        os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # SQLite gives -wal and -shm its mode
        self.path = path
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={'FULL' if sync == 'full' else 'NORMAL'}")
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS control (digest TEXT PRIMARY KEY, seq INTEGER, request TEXT);
            CREATE TABLE IF NOT EXISTS items (account TEXT, region TEXT, tbl TEXT, key TEXT, item TEXT,
                                              PRIMARY KEY (account, region, tbl, key));
            CREATE TABLE IF NOT EXISTS objects (account TEXT, partition TEXT, bucket TEXT, key TEXT, versions BLOB,
                                                PRIMARY KEY (account, partition, bucket, key));
            CREATE TABLE IF NOT EXISTS uploads (account TEXT, partition TEXT, bucket TEXT, upload_id TEXT,
                                                key TEXT, upload BLOB, PRIMARY KEY (account, partition, bucket, upload_id));
            CREATE TABLE IF NOT EXISTS upload_parts (account TEXT, partition TEXT, bucket TEXT, upload_id TEXT,
                                                     part INTEGER, blob BLOB,
                                                     PRIMARY KEY (account, partition, bucket, upload_id, part));
            CREATE TABLE IF NOT EXISTS messages (account TEXT, region TEXT, queue TEXT, message_id TEXT,
                                                 seq INTEGER, pending INTEGER, message BLOB,
                                                 PRIMARY KEY (account, region, queue, message_id));
            CREATE TABLE IF NOT EXISTS kms_keys (account TEXT, region TEXT, key_id TEXT, key BLOB,
                                                 PRIMARY KEY (account, region, key_id));
            CREATE TABLE IF NOT EXISTS deleted_receipts (account TEXT, region TEXT, queue TEXT, handle TEXT,
                                                         deleted_at REAL,
                                                         PRIMARY KEY (account, region, queue, handle));
        """)
        self.db.execute("INSERT OR IGNORE INTO meta VALUES ('format', ?)", (FORMAT_VERSION,))
        found = self.db.execute("SELECT value FROM meta WHERE name = 'format'").fetchone()[0]
        if found != FORMAT_VERSION:
            raise SystemExit(f"{path} is in store format {found}; this server reads format {FORMAT_VERSION}")
        self._seq = self.db.execute(
            "SELECT max(m) FROM (SELECT max(seq) AS m FROM control UNION ALL SELECT max(seq) FROM messages)"
        ).fetchone()[0] or 0
        self.purge_uploads_from_control()

    def purge_uploads_from_control(self) -> int:
        """Delete control rows that are uploads (older servers logged a POST upload, body and all, as
        set-up and replayed it on every start, bringing back an erased patient's video)."""
        uploads = [digest for digest, text in self.db.execute("SELECT digest, request FROM control").fetchall()
                   if _is_form(json.loads(text).get("environ", {}).get("CONTENT_TYPE", ""))]
        for digest in uploads:
            self.db.execute("DELETE FROM control WHERE digest = ?", (digest,))
        if uploads:
            log.warning("removed %d uploads kept by mistake as set-up requests", len(uploads))
        return len(uploads)

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def wipe(self) -> None:
        for table in ("control", "items", "objects", "uploads", "upload_parts", "messages", "deleted_receipts",
                      "kms_keys"):
            self.db.execute(f"DELETE FROM {table}")


class DurableState:
    """Moves state between moto's backends and the store."""

    def __init__(self, store: Store) -> None:
        from moto.dynamodb.models import dynamodb_backends
        from moto.kms.models import kms_backends
        from moto.s3.models import s3_backends
        from moto.sqs.models import sqs_backends

        self.store = store
        self.dynamodb = dynamodb_backends
        self.kms = kms_backends
        self.s3 = s3_backends
        self.sqs = sqs_backends
        self._seen: dict[tuple[str, str, str, str], tuple] = {}  # stored SQS messages -> signature
        self._handles: dict[tuple[str, str, str, str], list[str]] = {}  # their receipt handles so far

    # -- capture ---------------------------------------------------------------

    def record_control(self, request: Request) -> None:
        if _is_form(request.environ.get("CONTENT_TYPE", "")):
            # A form's body is an upload (a patient's video): never a set-up request to replay.
            log.warning("a form request was not kept as set-up: %s %s", request.method, request.path)
            return
        kept = {name: value for name, value in request.environ.items()
                if name in _KEPT_HEADERS or (name.startswith("HTTP_X_AMZ_") and name not in _PER_REQUEST_HEADERS)}
        record = {"method": request.method, "path": request.path, "query": request.query, "environ": kept,
                  "body": base64.b64encode(request.body).decode()}
        digest = hashlib.sha256(json.dumps(
            [request.service, request.method, request.path, request.query, kept.get("HTTP_X_AMZ_TARGET"),
             record["body"]]).encode()).hexdigest()
        self.store.db.execute("INSERT INTO control VALUES (?, ?, ?) ON CONFLICT (digest) DO UPDATE SET seq = excluded.seq",
                              (digest, self.store.next_seq(), json.dumps(record)))
        if request.service == "dynamodb" and request.action == "DeleteTable":
            name = request.json_body().get("TableName", "")
            self.store.db.execute("DELETE FROM items WHERE tbl = ? AND region = ?", (name, request.region))

    def record_items(self, request: Request) -> None:
        body = request.json_body()
        targets: list[tuple[str, dict[str, Any] | None, dict[str, Any] | None]] = []  # table, key, item
        if request.action in ("PutItem",):
            targets.append((body.get("TableName", ""), None, body.get("Item")))
        elif request.action in ("UpdateItem", "DeleteItem"):
            targets.append((body.get("TableName", ""), body.get("Key"), None))
        elif request.action == "BatchWriteItem":
            for table, writes in (body.get("RequestItems") or {}).items():
                for write in writes:
                    if "PutRequest" in write:
                        targets.append((table, None, write["PutRequest"].get("Item")))
                    elif "DeleteRequest" in write:
                        targets.append((table, write["DeleteRequest"].get("Key"), None))
        elif request.action == "TransactWriteItems":
            for entry in body.get("TransactItems") or []:
                for kind, spec in entry.items():
                    if kind == "Put":
                        targets.append((spec.get("TableName", ""), None, spec.get("Item")))
                    elif kind in ("Update", "Delete"):
                        targets.append((spec.get("TableName", ""), spec.get("Key"), None))
        account = self._account(request.access_key)
        backend = self.dynamodb[account][request.region]
        for table_name, key, item in targets:
            try:
                table = backend.get_table(table_name)
            except Exception:  # noqa: BLE001 - no such table: nothing was written
                continue
            if key is None:
                key = {name: item[name] for name in (table.hash_key_attr, table.range_key_attr)
                       if name and item and name in item}
            stored_key = json.dumps(key, sort_keys=True)
            current = backend.get_item(table.name, key)
            if current is None:
                self.store.db.execute("DELETE FROM items WHERE account = ? AND region = ? AND tbl = ? AND key = ?",
                                      (account, request.region, table.name, stored_key))
            else:
                self.store.db.execute("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)",
                                      (account, request.region, table.name, stored_key,
                                       json.dumps(current.to_json()["Attributes"])))

    def record_keys(self, request: Request) -> None:
        """Every KMS key of the request's account and region, as it is now."""
        account = self._account(request.access_key)
        backend = self.kms[account][request.region]
        self.store.db.execute("DELETE FROM kms_keys WHERE account = ? AND region = ?", (account, request.region))
        for key_id, key in list(backend.keys.items()):
            self.store.db.execute("INSERT INTO kms_keys VALUES (?, ?, ?, ?)",
                                  (account, request.region, key_id, _dump_kms_key(key, backend)))

    def record_objects(self, request: Request) -> None:
        account = self._account(request.access_key)
        bucket_name, key = self._s3_target(request, account)
        if bucket_name is None:
            return
        keys: list[str] = []
        if key:
            keys.append(key)
        elif request.method == "POST" and "delete" in urllib.parse.parse_qs(request.query, keep_blank_values=True):
            keys += [urllib.parse.unquote(k) for k in re.findall(r"<Key>(.*?)</Key>", request.body.decode("utf-8", "replace"))]
        elif _is_post_upload(request.method, request.query, request.environ.get("CONTENT_TYPE", "")):
            form = PostForm.parse(request.environ.get("CONTENT_TYPE", ""), request.body)
            if form.key:
                keys.append(form.key)
        query = urllib.parse.parse_qs(request.query, keep_blank_values=True)
        for partition, backend in list(self.s3[account].items()):
            bucket = backend.buckets.get(bucket_name)
            if bucket is None:
                continue
            if key and ("uploads" in query or "uploadId" in query):
                self._record_uploads(account, partition, bucket, key, query)
            for name in keys:
                versions = bucket.keys.getlist(name, [])
                if versions:
                    self.store.db.execute("INSERT OR REPLACE INTO objects VALUES (?, ?, ?, ?, ?)",
                                          (account, partition, bucket_name, name, pickle.dumps(list(versions))))
                else:
                    self.store.db.execute(
                        "DELETE FROM objects WHERE account = ? AND partition = ? AND bucket = ? AND key = ?",
                        (account, partition, bucket_name, name))

    def _record_uploads(self, account: str, partition: str, bucket: Any, key: str, query: dict[str, list[str]]) -> None:
        """Multipart uploads of `key` in progress: each upload's description, and
        the part this request sent, stored once (not the whole upload per part)."""
        place = (account, partition, bucket.name)
        current = {upload_id: upload for upload_id, upload in list(bucket.multiparts.items())
                   if upload.key_name == key}
        for upload_id, upload in current.items():
            description = {name: value for name, value in upload.__dict__.items() if name != "parts"}
            self.store.db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
                                  (*place, upload_id, key, pickle.dumps(description)))
        upload_id = (query.get("uploadId") or [""])[0]
        number = (query.get("partNumber") or [""])[0]
        if upload_id in current and number.isdigit() and int(number) in current[upload_id].parts:
            self.store.db.execute("INSERT OR REPLACE INTO upload_parts VALUES (?, ?, ?, ?, ?, ?)",
                                  (*place, upload_id, int(number), pickle.dumps(current[upload_id].parts[int(number)])))
        stored = [row[0] for row in self.store.db.execute(
            "SELECT upload_id FROM uploads WHERE account = ? AND partition = ? AND bucket = ? AND key = ?", (*place, key))]
        for gone in set(stored) - set(current):  # completed or aborted
            for table in ("uploads", "upload_parts"):
                self.store.db.execute(f"DELETE FROM {table} WHERE account = ? AND partition = ? AND bucket = ? "
                                      "AND upload_id = ?", (*place, gone))

    def record_messages(self) -> None:
        """Store every SQS message whose state differs from what is stored."""
        present: dict[tuple[str, str, str, str], tuple] = {}
        for account, region, backend in _backends(self.sqs):
            for queue in list(backend.queues.values()):
                pending = set(map(id, list(queue.pending_messages)))
                for message in list(queue._messages):
                    signature = (message.receipt_handle, message.approximate_receive_count, message.visible_at,
                                 message.delayed_until, id(message) in pending)
                    place = (account, region, queue.name, message.id)
                    present[place] = signature
                    if self._seen.get(place) != signature:
                        self.store.db.execute(
                            "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT "
                            "(account, region, queue, message_id) DO UPDATE SET pending = excluded.pending, "
                            "message = excluded.message",
                            (*place, self.store.next_seq(), int(signature[-1]), pickle.dumps(message)))
                        self._handles[place] = list(message.all_receipt_handles)
        now = time.time()
        for place in set(self._seen) - set(present):
            self.store.db.execute(
                "DELETE FROM messages WHERE account = ? AND region = ? AND queue = ? AND message_id = ?", place)
            queue = self._queue(*place[:3])
            for handle in self._handles.pop(place, []):
                if queue is not None and handle in queue.deleted_messages:  # deleted, not moved to a DLQ
                    self.store.db.execute("INSERT OR IGNORE INTO deleted_receipts VALUES (?, ?, ?, ?, ?)",
                                          (*place[:3], handle, now))
        self._seen = present

    # -- restore ---------------------------------------------------------------

    def restore(self, replay: Callable[[dict[str, Any]], int]) -> dict[str, int]:
        counts = {"kms_keys": 0, "control": 0, "items": 0, "objects": 0, "uploads": 0, "messages": 0}
        for account, region, key_id, blob in self.store.db.execute(
                "SELECT account, region, key_id, key FROM kms_keys").fetchall():
            backend = self.kms[account][region]
            backend.keys[key_id] = _load_kms_key(blob, backend)
            counts["kms_keys"] += 1
        # Every stored request succeeded once. A repeat moved it to the end (so the last setting
        # wins), which can put it after one that needs it: provisioning again after a restart
        # repeats CreateBucket after PutObjectLockConfiguration. So what fails is replayed
        # again after the rest, until a pass makes no progress.
        pending = [json.loads(text) for (text,) in
                   self.store.db.execute("SELECT request FROM control ORDER BY seq").fetchall()]
        counts["control"] = len(pending)
        while pending:
            failed = [record for record in pending if replay(record) >= 400]
            if len(failed) == len(pending):
                break
            pending = failed
        for record in pending:  # its resource was deleted later: nothing to set up
            log.info("not replayed: %s %s?%s", record["method"], record["path"], record["query"][:80])
        for _, _, backend in _backends(self.sqs):  # replayed notification set-ups sent test events
            for queue in backend.queues.values():
                queue._messages = []
                queue.pending_messages.clear()
        for account, region, table, item in self.store.db.execute("SELECT account, region, tbl, item FROM items"):
            try:
                self.dynamodb[account][region].put_item(table, json.loads(item), overwrite=True)
                counts["items"] += 1
            except Exception as error:  # noqa: BLE001 - the table is gone
                log.warning("item of %s not restored: %s", table, error)
        for account, partition, bucket_name, key, versions in self.store.db.execute(
                "SELECT account, partition, bucket, key, versions FROM objects"):
            bucket = self.s3[account][partition].buckets.get(bucket_name)
            if bucket is None:
                log.warning("object in missing bucket %s not restored", bucket_name)
                continue
            bucket.keys.setlist(key, pickle.loads(versions))
            counts["objects"] += 1
        from moto.s3.models import FakeMultipart

        for account, partition, bucket_name, upload_id, blob in self.store.db.execute(
                "SELECT account, partition, bucket, upload_id, upload FROM uploads").fetchall():
            bucket = self.s3[account][partition].buckets.get(bucket_name)
            if bucket is None:
                continue
            upload = FakeMultipart.__new__(FakeMultipart)
            upload.__dict__.update(pickle.loads(blob))
            upload.parts = {number: pickle.loads(part) for number, part in self.store.db.execute(
                "SELECT part, blob FROM upload_parts WHERE account = ? AND partition = ? AND bucket = ? "
                "AND upload_id = ?", (account, partition, bucket_name, upload_id))}
            bucket.multiparts[upload_id] = upload
            counts["uploads"] += 1
        for account, region, queue_name, _, pending, blob in self.store.db.execute(
                "SELECT account, region, queue, message_id, pending, message FROM messages ORDER BY seq"):
            queue = self._queue(account, region, queue_name)
            if queue is None:
                continue
            message = pickle.loads(blob)
            queue._messages.append(message)
            if pending:
                queue.pending_messages.add(message)
            counts["messages"] += 1
        cutoff = time.time() - DELETED_RECEIPT_TTL_SECONDS
        self.store.db.execute("DELETE FROM deleted_receipts WHERE deleted_at < ?", (cutoff,))
        for account, region, queue_name, handle in self.store.db.execute(
                "SELECT account, region, queue, handle FROM deleted_receipts"):
            queue = self._queue(account, region, queue_name)
            if queue is not None:
                queue.deleted_messages.add(handle)
        self._seen, self._handles = {}, {}
        self.store.db.execute("BEGIN")
        self.record_messages()  # the baseline; rewrites nothing that is unchanged
        self.store.db.execute("COMMIT")
        return counts

    # -- helpers ---------------------------------------------------------------

    def _queue(self, account: str, region: str, name: str) -> Any:
        try:
            return self.sqs[account][region].queues.get(name)
        except KeyError:
            return None

    @staticmethod
    def _account(access_key: str) -> str:
        from moto.core import DEFAULT_ACCOUNT_ID

        if not access_key:
            return DEFAULT_ACCOUNT_ID
        from moto.iam.models import get_account_id_from

        return get_account_id_from(access_key)

    def _s3_target(self, request: Request, account: str) -> tuple[str | None, str | None]:
        host = request.environ.get("HTTP_HOST", "").split(":")[0]
        path = request.path.lstrip("/")
        label = host.split(".")[0] if "." in host and not re.fullmatch(r"[\d.]+", host) else ""
        if label and any(label in backend.buckets for _, backend in list(self.s3[account].items())):
            return label, path or None  # virtual-hosted style
        bucket, _, key = path.partition("/")
        return (bucket or None), (key or None)


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
            account = self.state._account(request.access_key)
            bucket, key = self.state._s3_target(request, account)
            if key or (method == "POST" and "delete" in urllib.parse.parse_qs(request.query, keep_blank_values=True)):
                return "objects"
            if _is_post_upload(request.method, request.query, request.environ.get("CONTENT_TYPE", "")):
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
        body = _read_body(environ)
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


def _dump_kms_key(key: Any, backend: Any) -> bytes:
    """A moto KMS key as bytes: its attributes, its private key as PKCS#8 (the
    cryptography object does not pickle) and its tags."""
    from cryptography.hazmat.primitives import serialization

    state = dict(key.__dict__)
    signer = state.pop("private_key", None)
    private = None
    if signer is not None:
        inner = dict(signer.__dict__)
        pem = inner.pop("private_key").private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                     serialization.NoEncryption())
        private = (type(signer).__module__, type(signer).__qualname__, inner, pem)
    tags = backend.tagger.list_tags_for_resource(key.id).get("Tags", [])
    return pickle.dumps({"key": state, "private": private, "tags": tags})


def _load_kms_key(blob: bytes, backend: Any) -> Any:
    import importlib

    from cryptography.hazmat.primitives import serialization
    from moto.kms.models import Key

    data = pickle.loads(blob)
    key = Key.__new__(Key)
    key.__dict__.update(data["key"])
    if data["private"] is not None:
        module, name, inner, pem = data["private"]
        signer_class = getattr(importlib.import_module(module), name)
        signer = signer_class.__new__(signer_class)
        signer.__dict__.update(inner)
        signer.private_key = serialization.load_pem_private_key(pem, password=None)
        key.private_key = signer
    if data["tags"]:
        backend.tagger.tag_resource(key.id, data["tags"])
    return key


# --- the checks AWS makes before a service sees a request --------------------

MAX_CLOCK_SKEW_SECONDS = 15 * 60  # AWS refuses a signed request older (or newer) than this
_SIGNED_PREFIX = "AWS4-HMAC-SHA256 "


class AccessGuard:
    """WSGI middleware in front of moto: what AWS checks and moto's server does not.

    - Every request is signed with the configured credentials (SigV4: an
      Authorization header, a presigned URL's query, or a presigned POST's
      policy), and is neither stale nor expired; anything else is 403.
    - A presigned POST keeps to its policy's conditions (bucket, key, content
      type, size), as S3 checks them.
    - No CORS for any other origin: moto's server answers every origin
      (flask-cors), so any web page open on the machine could read and write
      through it. Its Access-Control-* headers are removed; only the origins
      named in `browser_origins` (SCHIZODOT_BROWSER_ORIGINS: the stack's own
      patient page, which still sends its parts here with presigned URLs) get
      a preflight answered and their origin allowed; any other is refused.
    - moto's management API (/moto-api: reset, state, dashboard) is refused.

    Why not moto's own check (INITIAL_NO_AUTH_ACTION_COUNT): it accepts only
    access keys made through its IAM API (random secrets, held in memory), needs
    IAM policies for every caller, and does not check presigned URLs or POSTs.
    """

    def __init__(self, inner: Any, access_key: str, secret_key: str, browser_origins: tuple[str, ...] = (),
                 clock: Callable[[], float] = time.time) -> None:
        if not access_key or not secret_key:
            raise ValueError("the AWS server needs an access key and a secret key to check signatures against")
        self.inner = inner
        self.access_key = access_key
        self.secret_key = secret_key
        self.browser_origins = browser_origins
        self.clock = clock

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "") or "/"
        if path.startswith("/moto-api"):
            return _refuse(environ, start_response, "AccessDenied", "moto's management API is not served here")
        origin = environ.get("HTTP_ORIGIN", "")
        allowed = [("Access-Control-Allow-Origin", origin), ("Vary", "Origin")] \
            if origin and origin in self.browser_origins else []
        if environ.get("REQUEST_METHOD", "").upper() == "OPTIONS":
            if not allowed:
                return _refuse(environ, start_response, "AccessDenied", "cross-origin requests are not served")
            start_response("200 OK", [*allowed, ("Access-Control-Allow-Methods", "GET, HEAD, PUT, POST"),
                                      ("Access-Control-Allow-Headers",
                                       environ.get("HTTP_ACCESS_CONTROL_REQUEST_HEADERS", "")),
                                      ("Access-Control-Max-Age", "600"), ("Content-Length", "0")])
            return [b""]
        declared_length = environ.get("CONTENT_LENGTH", "")
        body = _read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        problem = self.problem(environ, body, declared_length)
        if problem is not None:
            return _refuse(environ, start_response, *problem)

        def without_cors(status: str, headers: list, exc_info: Any = None) -> Any:
            return start_response(status, [(name, value) for name, value in headers
                                           if not name.lower().startswith("access-control-")] + allowed, exc_info)

        return self.inner(environ, without_cors)

    def problem(self, environ: dict[str, Any], body: bytes, declared_length: str) -> tuple[str, str] | None:
        """(code, message) when the request must be refused; None when it is signed and in date."""
        authorization = environ.get("HTTP_AUTHORIZATION", "")
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if authorization.startswith(_SIGNED_PREFIX):
            return self._header_problem(environ, body, authorization, declared_length)
        if "X-Amz-Signature" in query:
            return self._query_problem(environ, query, declared_length)
        if _is_post_upload(environ.get("REQUEST_METHOD", ""), environ.get("QUERY_STRING", ""),
                           environ.get("CONTENT_TYPE", "")):
            return self._post_problem(environ, body)
        return "AccessDenied", "the request is not signed (AWS Signature Version 4 is required)"

    def _header_problem(self, environ: dict[str, Any], body: bytes, authorization: str,
                        declared_length: str) -> tuple[str, str] | None:
        fields = dict(part.strip().partition("=")[::2] for part in authorization[len(_SIGNED_PREFIX):].split(","))
        scope = fields.get("Credential", "").split("/")
        if len(scope) != 5 or not hmac.compare_digest(scope[0], self.access_key):
            return "InvalidAccessKeyId", "the access key is not this server's"
        timestamp = environ.get("HTTP_X_AMZ_DATE", "")
        stale = self._stale(timestamp)
        if stale:
            return "RequestTimeTooSkewed", stale
        signed = [name for name in fields.get("SignedHeaders", "").split(";") if name]
        expected = self._signature(environ, _raw_uri(environ), signed, scope, timestamp, declared_length, body)
        if not hmac.compare_digest(expected, fields.get("Signature", "")):
            return "SignatureDoesNotMatch", "the request's signature does not match its content and credentials"
        return None

    def _query_problem(self, environ: dict[str, Any], query: dict[str, list[str]],
                       declared_length: str) -> tuple[str, str] | None:
        first = {name: values[0] for name, values in query.items()}
        scope = first.get("X-Amz-Credential", "").split("/")
        if first.get("X-Amz-Algorithm") != "AWS4-HMAC-SHA256" or len(scope) != 5 \
                or not hmac.compare_digest(scope[0], self.access_key):
            return "InvalidAccessKeyId", "the access key is not this server's"
        timestamp, expires = first.get("X-Amz-Date", ""), first.get("X-Amz-Expires", "")
        signed_at = _parse_amz_date(timestamp)
        if signed_at is None or not expires.isdigit():
            return "AccessDenied", "the presigned URL has no valid date or lifetime"
        if self.clock() > signed_at + int(expires):
            return "AccessDenied", "the presigned URL has expired"
        if signed_at > self.clock() + MAX_CLOCK_SKEW_SECONDS:
            return "RequestTimeTooSkewed", "the presigned URL is dated in the future"
        path, _, raw_query = _raw_uri(environ).partition("?")
        unsigned = "&".join(pair for pair in raw_query.split("&") if not pair.startswith("X-Amz-Signature="))
        signed = [name for name in first.get("X-Amz-SignedHeaders", "").split(";") if name]
        expected = self._signature(environ, f"{path}?{unsigned}", signed, scope, timestamp, declared_length, b"",
                                   presigned_for=int(expires))
        if not hmac.compare_digest(expected, first.get("X-Amz-Signature", "")):
            return "SignatureDoesNotMatch", "the presigned URL's signature does not match"
        return None

    def _post_problem(self, environ: dict[str, Any], body: bytes) -> tuple[str, str] | None:
        form = PostForm.parse(environ.get("CONTENT_TYPE", ""), body)
        scope = form.fields.get("x-amz-credential", "").split("/")
        if form.fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256" or len(scope) != 5 \
                or not hmac.compare_digest(scope[0], self.access_key):
            return "InvalidAccessKeyId", "the form's access key is not this server's"
        policy_text = form.fields.get("policy", "")
        key = _signing_key(self.secret_key, scope[1], scope[2], scope[3])
        expected = hmac.new(key, policy_text.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, form.fields.get("x-amz-signature", "")):
            return "SignatureDoesNotMatch", "the form's policy signature does not match"
        try:
            policy = json.loads(base64.b64decode(policy_text))
            expiration = calendar.timegm(time.strptime(policy["expiration"][:19], "%Y-%m-%dT%H:%M:%S"))
        except (ValueError, KeyError, TypeError):
            return "InvalidPolicyDocument", "the form's policy cannot be read"
        if self.clock() > expiration:
            return "AccessDenied", "the form's policy has expired"
        bucket = (environ.get("PATH_INFO", "") or "/").lstrip("/").partition("/")[0]
        broken = form.broken_condition(policy.get("conditions") or [], bucket)
        return ("AccessDenied", f"the upload breaks its policy: {broken}") if broken else None

    def _stale(self, timestamp: str) -> str | None:
        signed_at = _parse_amz_date(timestamp)
        if signed_at is None:
            return "the request has no X-Amz-Date"
        if abs(self.clock() - signed_at) > MAX_CLOCK_SKEW_SECONDS:
            return "the request's date is more than 15 minutes from the server's clock"
        return None

    def _signature(self, environ: dict[str, Any], uri: str, signed: list[str], scope: list[str], timestamp: str,
                   declared_length: str, body: bytes, presigned_for: int | None = None) -> str:
        """The signature this server would make for the request (botocore's SigV4, moto's dependency)."""
        from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        headers = {name: _header(environ, name, declared_length) for name in signed}
        host = environ.get("HTTP_HOST", "localhost")
        request = AWSRequest(method=environ.get("REQUEST_METHOD", "GET").upper(), url=f"http://{host}{uri}",
                             headers=headers, data=body)
        request.context["timestamp"] = timestamp
        credentials = Credentials(self.access_key, self.secret_key)
        _, _, region, service, _ = scope
        if presigned_for is not None:
            auth: Any = S3SigV4QueryAuth(credentials, service, region, expires=presigned_for)
        elif service == "s3":
            auth = S3SigV4Auth(credentials, service, region)
        else:
            auth = SigV4Auth(credentials, service, region)
        canonical = auth.canonical_request(request)
        return auth.signature(auth.string_to_sign(request, canonical), request)


class PostForm:
    """A presigned POST's form: its fields (names lower-cased, as S3 compares them) and its file."""

    def __init__(self, fields: dict[str, str], filename: str, size: int) -> None:
        self.fields = fields
        self.filename = filename
        self.size = size

    @classmethod
    def parse(cls, content_type: str, body: bytes) -> "PostForm":
        from werkzeug.formparser import parse_form_data

        environ = {"REQUEST_METHOD": "POST", "CONTENT_TYPE": content_type, "CONTENT_LENGTH": str(len(body)),
                   "wsgi.input": io.BytesIO(body)}
        _, form, files = parse_form_data(environ)
        upload = files.get("file")
        size = 0
        if upload is not None:
            upload.stream.seek(0, io.SEEK_END)
            size = upload.stream.tell()
        return cls({name.lower(): value for name, value in form.items()},
                   (upload.filename or "") if upload is not None else "", size)

    @property
    def key(self) -> str:
        return self.fields.get("key", "").replace("${filename}", self.filename)

    def broken_condition(self, conditions: list[Any], bucket: str) -> str | None:
        """The first condition of the policy the form breaks, in words; None when it keeps them all."""
        checks: list[tuple[str, str, Any]] = []
        for condition in conditions:
            if isinstance(condition, dict):
                checks += [("eq", name, value) for name, value in condition.items()]
            elif isinstance(condition, list) and condition and condition[0] == "content-length-range":
                low, high = int(condition[1]), int(condition[2])
                if not low <= self.size <= high:
                    return f"the file is {self.size} bytes; it must be {low} to {high}"
            elif isinstance(condition, list) and len(condition) == 3:
                checks.append((str(condition[0]).lower(), str(condition[1]).lstrip("$"), condition[2]))
            else:
                return "a condition cannot be read"
        for operator, name, value in checks:
            actual = bucket if name.lower() == "bucket" else self.key if name.lower() == "key" \
                else self.fields.get(name.lower(), "")
            if operator == "eq" and actual != value:
                return f"{name} must be {value!r}"
            if operator == "starts-with" and not actual.startswith(value):
                return f"{name} must start with {value!r}"
            if operator not in ("eq", "starts-with"):
                return f"unknown condition {operator!r}"
        return None


def _refuse(environ: dict[str, Any], start_response: Any, code: str, message: str) -> list[bytes]:
    """403 in the shape the caller's protocol reads (JSON for X-Amz-Target APIs, XML for S3 and query APIs)."""
    status = "400 Bad Request" if code == "InvalidPolicyDocument" else "403 Forbidden"
    if environ.get("HTTP_X_AMZ_TARGET") or "json" in environ.get("CONTENT_TYPE", ""):
        start_response(status, [("Content-Type", "application/x-amz-json-1.0")])
        return [json.dumps({"__type": code, "message": message}).encode()]
    start_response(status, [("Content-Type", "application/xml")])
    return [f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message>"
            f"</Error>".encode()]


def _header(environ: dict[str, Any], name: str, declared_length: str) -> str:
    if name == "content-length":
        return declared_length
    if name == "content-type":
        return environ.get("CONTENT_TYPE", "")
    return environ.get("HTTP_" + name.upper().replace("-", "_"), "")


def _raw_uri(environ: dict[str, Any]) -> str:
    """The path and query as the client sent them (signatures cover the encoded form)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        return raw
    query = environ.get("QUERY_STRING", "")
    return urllib.parse.quote(environ.get("PATH_INFO", "") or "/") + (f"?{query}" if query else "")


def _parse_amz_date(text: str) -> float | None:
    try:
        return calendar.timegm(time.strptime(text, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return None


def _signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    key = ("AWS4" + secret).encode()
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _is_form(content_type: str) -> bool:
    return content_type.lower().startswith("multipart/form-data")


def _is_post_upload(method: str, query: str, content_type: str) -> bool:
    """S3's browser-style upload: a form POSTed to the bucket itself, no subresource."""
    return method.upper() == "POST" and not query and _is_form(content_type)


def _private_directory(path: Path) -> None:
    """The data directory, readable by this user only (it holds patients' media and records)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)


def _backends(backend_dict: Any) -> list[tuple[str, str, Any]]:
    """(account, region, backend) for every backend moto has made, copied first:
    another request may be adding one."""
    return [(account, region, backend) for account, regions in list(backend_dict.items())
            for region, backend in list(regions.items())]


def _read_body(environ: dict[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = environ.get("CONTENT_LENGTH") or ""
    if length.strip().isdigit():
        return stream.read(int(length)) if int(length) else b""
    if environ.get("wsgi.input_terminated") or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
        return stream.read()
    return b""


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
    return AccessGuard(app, *credentials, browser_origins) if credentials is not None else app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
    sys.exit(main())
