"""Presigned uploads: a POST form for the endpoint the uploader can reach, whose policy
lets S3 refuse any other key, another content type, an empty or an oversized file."""

from __future__ import annotations

import asyncio
import base64
import json

from services.ingest.main import build_upload_signer
from services.ingest.settings import IngestSettings
from shared.settings import CommonSettings

KEY = "uploads/clinic-a.patient-001/job-abc123def456/a.mp4"


def _signed(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = IngestSettings(public_s3_endpoint_url="http://localhost:4566")
    sign = build_upload_signer(settings, CommonSettings(aws_endpoint_url="http://moto:4566"), storage=None)
    return asyncio.run(sign(KEY, "video/mp4", 5_000_000, 60))


def test_public_endpoint_is_used_for_presigned_uploads(monkeypatch):
    post = _signed(monkeypatch)
    assert post.url == "http://localhost:4566/schizodot-media"
    assert post.fields["key"] == KEY and post.fields["Content-Type"] == "video/mp4"
    assert {"x-amz-signature", "x-amz-credential", "policy"} <= set(post.fields)


def test_the_signed_policy_fixes_key_type_and_size_and_expires(monkeypatch):
    post = _signed(monkeypatch)
    policy = json.loads(base64.b64decode(post.fields["policy"]))
    conditions = policy["conditions"]
    assert {"key": KEY} in conditions and {"bucket": "schizodot-media"} in conditions
    assert {"Content-Type": "video/mp4"} in conditions
    assert ["content-length-range", 1, 5_000_000] in conditions
    assert policy["expiration"].endswith("Z")
