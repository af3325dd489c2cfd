"""Issue 12's AWS side on moto's server: encryption at rest and retention as provisioned,
the audit trail's Object Lock, and the per-credential limit across processes."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from concurrent.futures import ProcessPoolExecutor

import pytest

from shared.aws.clients import AsyncClients, sync_client
from shared.identity.audit import AuditRecord, S3AuditStore
from shared.identity.ratelimit import DynamoRateLimiter
from shared.runtime.infra import (
    browser_cors,
    bucket_policy_document,
    ensure_bucket,
    ensure_infrastructure,
    media_lifecycle,
)
from shared.runtime.topology import STAGES, WORK_QUEUES
from shared.settings import CommonSettings


def test_everything_is_encrypted_with_the_customer_managed_key(aws_server):
    settings = aws_server
    key_arn = sync_client(settings, "kms").describe_key(KeyId=settings.kms_key_alias)["KeyMetadata"]["Arn"]
    s3 = sync_client(settings, "s3")
    for bucket in (settings.bucket, settings.audit_bucket):
        [rule] = s3.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
        assert rule["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn}
        assert s3.get_public_access_block(Bucket=bucket)["PublicAccessBlockConfiguration"]["BlockPublicPolicy"]
    s3.put_object(Bucket=settings.bucket, Key="artifacts/job-000000000000/probe.json", Body=b"{}")
    assert s3.head_object(Bucket=settings.bucket, Key="artifacts/job-000000000000/probe.json")[
        "ServerSideEncryption"] == "aws:kms"
    sqs = sync_client(settings, "sqs")
    for stage in (*STAGES, *WORK_QUEUES):
        for name in (settings.queue_name(stage), settings.dead_letter_queue_name(stage)):
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            assert sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["KmsMasterKeyId"])["Attributes"][
                "KmsMasterKeyId"] == settings.kms_key_alias, name
    dynamodb = sync_client(settings, "dynamodb")
    for table in (settings.jobs_table, settings.users_table, settings.api_keys_table, settings.patient_links_table,
                  settings.rate_limits_table, settings.erasures_table, settings.alerts_table,
                  settings.clinic_patients_table):
        sse = dynamodb.describe_table(TableName=table)["Table"]["SSEDescription"]
        assert (sse["Status"], sse["SSEType"], sse["KMSMasterKeyArn"]) == ("ENABLED", "KMS", key_arn), table
    ensure_infrastructure(settings)  # idempotent


def test_browsers_of_the_configured_origins_may_upload_and_read_media_and_no_others(aws_server):
    """The patient page sends parts straight to the bucket and the console shows media from it: a CORS rule
    for exactly the configured origins (SCHIZODOT_BROWSER_ORIGINS), none without them."""
    settings = aws_server.model_copy(update={"browser_origins": ("https://checkin.clinic.example",
                                                                 "https://results.clinic.example")})
    queue = sync_client(settings, "sqs").get_queue_url(QueueName=settings.queue_name("ingest"))["QueueUrl"]
    s3 = sync_client(settings, "s3")
    try:
        ensure_bucket(settings, queue)
        [rule] = s3.get_bucket_cors(Bucket=settings.bucket)["CORSRules"]
    finally:  # the browser tests' pages on 127.0.0.1 share this bucket
        s3.delete_bucket_cors(Bucket=settings.bucket)
    assert rule["AllowedOrigins"] == ["https://checkin.clinic.example", "https://results.clinic.example"]
    assert set(rule["AllowedMethods"]) == {"GET", "HEAD", "PUT", "POST"} and "*" not in rule["AllowedHeaders"]
    assert "ExposeHeaders" not in rule  # the page never reads ETags: the service completes uploads from S3's list
    assert browser_cors(aws_server) is None


def test_raw_media_expire_after_the_retention_period(aws_server):
    settings = aws_server
    rules = sync_client(settings, "s3").get_bucket_lifecycle_configuration(Bucket=settings.bucket)["Rules"]
    assert rules == media_lifecycle(settings)["Rules"]
    assert {r["Filter"]["Prefix"]: r["Expiration"]["Days"] for r in rules} == {
        "uploads/": settings.media_retention_days, "incoming/": settings.media_retention_days}
    assert all(r["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 1} for r in rules)
    # Findings (artifacts/) have no expiry: they stay until the patient is erased.
    assert not any(r["Filter"]["Prefix"].startswith("artifacts") for r in rules)


def test_the_bucket_policy_refuses_plain_http_and_other_encryption():
    policy = bucket_policy_document("schizodot-media", "arn:aws:kms:eu-west-1:123456789012:key/k")
    statements = {s["Sid"]: s for s in policy["Statement"]}
    assert all(s["Effect"] == "Deny" and s["Principal"] == "*" for s in statements.values())
    tls = statements["DenyInsecureTransport"]
    assert tls["Action"] == "s3:*" and tls["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert set(tls["Resource"]) == {"arn:aws:s3:::schizodot-media", "arn:aws:s3:::schizodot-media/*"}
    assert statements["DenyOtherEncryption"]["Condition"] == {
        "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}}
    assert statements["DenyOtherKmsKey"]["Condition"] == {"StringNotEqualsIfExists": {
        "s3:x-amz-server-side-encryption-aws-kms-key-id": "arn:aws:kms:eu-west-1:123456789012:key/k"}}
    assert "DenyCustomerProvidedKeys" in statements


def test_the_audit_trail_keeps_what_was_first_written(aws_server):
    settings = aws_server
    lock = sync_client(settings, "s3").get_object_lock_configuration(Bucket=settings.audit_bucket)
    assert lock["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
    assert lock["ObjectLockConfiguration"]["Rule"]["DefaultRetention"]["Days"] == settings.audit_retention_days
    record = AuditRecord(record_id="0123456789abcdef", at="2026-01-01T00:00:00.000000Z", service="test",
                         action="result.read", outcome="success", actor="dr-a", role="clinician",
                         clinic_id="clinic-tamper", credential="bearer", patient_ref="pt-0000000000000000")

    async def scenario():
        async with AsyncClients(settings) as aws:
            store = S3AuditStore(aws.s3, settings.audit_bucket)
            await store.append(record)
            forged = record.model_copy(update={"actor": "nobody"})
            await store.append(forged)  # the same key again: a rewrite
            return await store.query("clinic-tamper", since=None, patient_ref_=None, limit=10, after=None)

    [found], more = asyncio.run(scenario())
    assert more is None and found["actor"] == "dr-a" and found["overwritten"] is True
    s3 = sync_client(settings, "s3")
    versions = s3.list_object_versions(Bucket=settings.audit_bucket, Prefix=record.key())["Versions"]
    assert len(versions) == 2
    with pytest.raises(Exception, match="AccessDenied|Access Denied"):  # compliance mode: nobody deletes a version
        s3.delete_object(Bucket=settings.audit_bucket, Key=record.key(), VersionId=versions[-1]["VersionId"])


def _replica_hits(settings: CommonSettings, hits: int) -> list[bool]:
    """One API process's share: `hits` concurrent check-in creations on one credential."""
    async def replica() -> list[bool]:
        async with AsyncClients(settings) as aws:
            limiter = DynamoRateLimiter(aws.dynamodb, settings.rate_limits_table)
            verdicts = await asyncio.gather(*(limiter.hit("checkins:test:replicas", 15, 3600) for _ in range(hits)))
            return [v.allowed for v in verdicts]

    return asyncio.run(replica())


def test_the_checkin_limit_holds_across_processes(aws_server):
    """Two processes hitting one credential's window at once: exactly `limit` pass."""
    settings = aws_server
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("spawn")) as pool:
        first, second = pool.map(_replica_hits, [settings, settings], [20, 20])
    assert sum(first) + sum(second) == 15
    item = sync_client(settings, "dynamodb").scan(TableName=settings.rate_limits_table)["Items"]
    assert any(json.dumps(i).count("checkins:test:replicas") for i in item)
    assert all("expires_at" in i for i in item)  # the TTL removes old windows
