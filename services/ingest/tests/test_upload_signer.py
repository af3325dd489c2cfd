"""Presigned upload URLs name the endpoint the uploader can reach."""

from __future__ import annotations

import asyncio

from services.ingest.main import build_upload_signer
from services.ingest.settings import IngestSettings
from shared.settings import CommonSettings


def test_public_endpoint_is_used_for_presigned_uploads(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = IngestSettings(public_s3_endpoint_url="http://localhost:4566")
    sign = build_upload_signer(settings, CommonSettings(aws_endpoint_url="http://moto:4566"), storage=None)
    url = asyncio.run(sign("uploads/patient-001/job-abc123def456/a.mp4", "video/mp4", 60))
    assert url.startswith("http://localhost:4566/schizodot-media/uploads/patient-001/job-abc123def456/a.mp4?")
    assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url
