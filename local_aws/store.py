"""The state on disk: the SQLite store, and moving state between moto's backends and it."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pickle
import re
import sqlite3
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from local_aws.moto_internals import (all_messages, backends, dump_kms_key, empty_queue, load_kms_key, restore_message,
                                      restored_upload, upload_description)
from local_aws.request import PostForm, Request, is_form, is_post_upload

log = logging.getLogger("local_aws")

FORMAT_VERSION = "1"
# Receipt handles of deleted messages are kept this long, so that a delete
# retried across a restart still succeeds (SQS visibility is at most 12 h).
DELETED_RECEIPT_TTL_SECONDS = 12 * 3600
# Request headers a replayed control request needs (service routing, protocol, account); and every
# other x-amz-* header but the per-request ones, since some shape what is made (S3's
# x-amz-bucket-object-lock-enabled, x-amz-object-ownership, x-amz-acl on CreateBucket).
_KEPT_HEADERS = ("HTTP_AUTHORIZATION", "HTTP_X_AMZ_TARGET", "CONTENT_TYPE", "HTTP_HOST", "HTTP_X_AMZ_DATE",
                 "HTTP_X_AMZ_CONTENT_SHA256", "HTTP_X_AMZN_QUERY_MODE", "HTTP_CONTENT_MD5")
_PER_REQUEST_HEADERS = ("HTTP_X_AMZ_SECURITY_TOKEN", "HTTP_X_AMZ_USER_AGENT", "HTTP_X_AMZ_SDK_CHECKSUM_ALGORITHM",
                        "HTTP_X_AMZ_CHECKSUM_CRC32", "HTTP_X_AMZ_CHECKSUM_CRC32C", "HTTP_X_AMZ_CHECKSUM_SHA1",
                        "HTTP_X_AMZ_CHECKSUM_SHA256", "HTTP_X_AMZ_DECODED_CONTENT_LENGTH")


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
                   if is_form(json.loads(text).get("environ", {}).get("CONTENT_TYPE", ""))]
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
        if is_form(request.environ.get("CONTENT_TYPE", "")):
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
        account = self.account_of(request.access_key)
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
        account = self.account_of(request.access_key)
        backend = self.kms[account][request.region]
        self.store.db.execute("DELETE FROM kms_keys WHERE account = ? AND region = ?", (account, request.region))
        for key_id, key in list(backend.keys.items()):
            self.store.db.execute("INSERT INTO kms_keys VALUES (?, ?, ?, ?)",
                                  (account, request.region, key_id, dump_kms_key(key, backend)))

    def record_objects(self, request: Request) -> None:
        account = self.account_of(request.access_key)
        bucket_name, key = self.s3_target(request, account)
        if bucket_name is None:
            return
        keys: list[str] = []
        if key:
            keys.append(key)
        elif request.method == "POST" and "delete" in urllib.parse.parse_qs(request.query, keep_blank_values=True):
            keys += [urllib.parse.unquote(k) for k in re.findall(r"<Key>(.*?)</Key>", request.body.decode("utf-8", "replace"))]
        elif is_post_upload(request.method, request.query, request.environ.get("CONTENT_TYPE", "")):
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
            self.store.db.execute("INSERT OR REPLACE INTO uploads VALUES (?, ?, ?, ?, ?, ?)",
                                  (*place, upload_id, key, pickle.dumps(upload_description(upload))))
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
        for account, region, backend in backends(self.sqs):
            for queue in list(backend.queues.values()):
                pending = set(map(id, list(queue.pending_messages)))
                for message in all_messages(queue):
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
        """Put the stored state back into moto, in the order it depends on: keys, set-up, then data."""
        counts = {"kms_keys": self._restore_keys(), "control": self._replay_control(replay),
                  "items": self._restore_items(), "objects": self._restore_objects(),
                  "uploads": self._restore_uploads(), "messages": self._restore_messages()}
        self._seen, self._handles = {}, {}
        self.store.db.execute("BEGIN")
        self.record_messages()  # the baseline; rewrites nothing that is unchanged
        self.store.db.execute("COMMIT")
        return counts

    def _restore_keys(self) -> int:
        rows = self.store.db.execute("SELECT account, region, key_id, key FROM kms_keys").fetchall()
        for account, region, key_id, blob in rows:
            backend = self.kms[account][region]
            backend.keys[key_id] = load_kms_key(blob, backend)
        return len(rows)

    def _replay_control(self, replay: Callable[[dict[str, Any]], int]) -> int:
        # Every stored request succeeded once. A repeat moved it to the end (so the last setting
        # wins), which can put it after one that needs it: provisioning again after a restart
        # repeats CreateBucket after PutObjectLockConfiguration. So what fails is replayed
        # again after the rest, until a pass makes no progress.
        pending = [json.loads(text) for (text,) in
                   self.store.db.execute("SELECT request FROM control ORDER BY seq").fetchall()]
        replayed = len(pending)
        while pending:
            failed = [record for record in pending if replay(record) >= 400]
            if len(failed) == len(pending):
                break
            pending = failed
        for record in pending:  # its resource was deleted later: nothing to set up
            log.info("not replayed: %s %s?%s", record["method"], record["path"], record["query"][:80])
        for _, _, backend in backends(self.sqs):  # replayed notification set-ups sent test events
            for queue in list(backend.queues.values()):
                empty_queue(backend, queue)
        return replayed

    def _restore_items(self) -> int:
        restored = 0
        for account, region, table, item in self.store.db.execute("SELECT account, region, tbl, item FROM items"):
            try:
                self.dynamodb[account][region].put_item(table, json.loads(item), overwrite=True)
                restored += 1
            except Exception as error:  # noqa: BLE001 - the table is gone
                log.warning("item of %s not restored: %s", table, error)
        return restored

    def _restore_objects(self) -> int:
        restored = 0
        for account, partition, bucket_name, key, versions in self.store.db.execute(
                "SELECT account, partition, bucket, key, versions FROM objects"):
            bucket = self.s3[account][partition].buckets.get(bucket_name)
            if bucket is None:
                log.warning("object in missing bucket %s not restored", bucket_name)
                continue
            bucket.keys.setlist(key, pickle.loads(versions))
            restored += 1
        return restored

    def _restore_uploads(self) -> int:
        restored = 0
        for account, partition, bucket_name, upload_id, blob in self.store.db.execute(
                "SELECT account, partition, bucket, upload_id, upload FROM uploads").fetchall():
            bucket = self.s3[account][partition].buckets.get(bucket_name)
            if bucket is None:
                continue
            parts = {number: pickle.loads(part) for number, part in self.store.db.execute(
                "SELECT part, blob FROM upload_parts WHERE account = ? AND partition = ? AND bucket = ? "
                "AND upload_id = ?", (account, partition, bucket_name, upload_id))}
            bucket.multiparts[upload_id] = restored_upload(pickle.loads(blob), parts)
            restored += 1
        return restored

    def _restore_messages(self) -> int:
        restored = 0
        for account, region, queue_name, _, pending, blob in self.store.db.execute(
                "SELECT account, region, queue, message_id, pending, message FROM messages ORDER BY seq"):
            queue = self._queue(account, region, queue_name)
            if queue is None:
                continue
            restore_message(queue, pickle.loads(blob), bool(pending))
            restored += 1
        cutoff = time.time() - DELETED_RECEIPT_TTL_SECONDS
        self.store.db.execute("DELETE FROM deleted_receipts WHERE deleted_at < ?", (cutoff,))
        for account, region, queue_name, handle in self.store.db.execute(
                "SELECT account, region, queue, handle FROM deleted_receipts"):
            queue = self._queue(account, region, queue_name)
            if queue is not None:
                queue.deleted_messages.add(handle)
        return restored

    # -- helpers ---------------------------------------------------------------

    def _queue(self, account: str, region: str, name: str) -> Any:
        try:
            return self.sqs[account][region].queues.get(name)
        except KeyError:
            return None

    @staticmethod
    def account_of(access_key: str) -> str:
        from moto.core import DEFAULT_ACCOUNT_ID

        if not access_key:
            return DEFAULT_ACCOUNT_ID
        from moto.iam.models import get_account_id_from

        return get_account_id_from(access_key)

    def s3_target(self, request: Request, account: str) -> tuple[str | None, str | None]:
        host = request.environ.get("HTTP_HOST", "").split(":")[0]
        path = request.path.lstrip("/")
        label = host.split(".")[0] if "." in host and not re.fullmatch(r"[\d.]+", host) else ""
        if label and any(label in backend.buckets for _, backend in list(self.s3[account].items())):
            return label, path or None  # virtual-hosted style
        bucket, _, key = path.partition("/")
        return (bucket or None), (key or None)


def _private_directory(path: Path) -> None:
    """The data directory, readable by this user only (it holds patients' media and records)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
