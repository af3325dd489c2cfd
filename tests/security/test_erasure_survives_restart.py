"""Finding 2 of the security review (issue 19): erasure was undone by a restart.

A presigned-POST upload has no key in its path; the durable AWS server logged it
as a set-up request, body (the video) and all, and replayed it on every start,
so an erased patient's recording came back. Failed on the code before the fix."""

from __future__ import annotations

import base64
import json
import sqlite3

import httpx
import pytest

from shared.aws.storage import post_conditions
from tests.security.aws_server import AwsServer
from tests.security.test_embedded_aws_server import ensure_infrastructure_signed

pytestmark = pytest.mark.server
VIDEO = b"\x1aE\xdf\xa3 an erased patient's recording " * 32


def test_erased_post_upload_stays_gone_after_restart(tmp_path):
    server = AwsServer(tmp_path / "aws").start()
    try:
        ensure_infrastructure_signed(server)
        s3, bucket, key = server.client("s3"), server.settings.bucket, "uploads/patient-x/job-1/video.webm"
        post = s3.generate_presigned_post(bucket, key, Fields={"Content-Type": "video/webm"},
                                          Conditions=post_conditions("video/webm", 10**6), ExpiresIn=60)
        sent = httpx.post(post["url"], data=post["fields"], files={"file": ("v.webm", VIDEO, "video/webm")})
        assert sent.status_code in (200, 204), sent.text
        server.stop()
        server.start()  # the upload itself survives a restart (it is an object write)
        s3 = server.client("s3")
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == VIDEO
        s3.delete_object(Bucket=bucket, Key=key)  # what the erasure does to the media object
        server.stop()
        server.start()
        listed = server.client("s3").list_objects_v2(Bucket=bucket, Prefix="uploads/patient-x/")
        assert listed.get("KeyCount", 0) == 0
    finally:
        server.stop()
    requests = [json.loads(text) for (text,) in
                sqlite3.connect(tmp_path / "aws" / "aws.sqlite3").execute("SELECT request FROM control")]
    assert not [r for r in requests if VIDEO[:20] in base64.b64decode(r["body"])]


def test_uploads_kept_as_set_up_by_older_servers_are_purged_on_start(tmp_path):
    server = AwsServer(tmp_path / "aws").start()
    server.stop()
    old_row = {"method": "POST", "path": "/schizodot-media", "query": "",
               "environ": {"CONTENT_TYPE": "multipart/form-data; boundary=x"},
               "body": base64.b64encode(VIDEO).decode()}
    with sqlite3.connect(tmp_path / "aws" / "aws.sqlite3") as db:
        db.execute("INSERT INTO control VALUES ('old-upload', 999999, ?)", (json.dumps(old_row),))
    server.start()
    server.stop()
    with sqlite3.connect(tmp_path / "aws" / "aws.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM control WHERE digest = 'old-upload'").fetchone()[0] == 0
