"""Issue 12 on the IAM documents: KMS use, the append-only audit trail, identity tables."""

from __future__ import annotations

import pytest

from shared.runtime.topology import STAGES
from shared.settings import CommonSettings
from tests.deploy.test_iam import ACCOUNT, KMS_KEY_ID, REGION, allowed, load

SETTINGS = CommonSettings()
KEY = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{KMS_KEY_ID}"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/"
AUDIT_RECORD = f"arn:aws:s3:::{SETTINGS.audit_bucket}/audit/clinic-a/2026-01-01T00:00:00.000000Z_-_abc.json"
AUDIT_WRITERS = {"ingest", "results"}  # the APIs, and results for erasures and results sent to the EHR


def _kms_statements(policy: dict) -> list[dict]:
    return [s for s in policy["Statement"] if any(a.startswith("kms:") for a in s["Action"])]


@pytest.mark.parametrize("service", STAGES)
def test_each_role_uses_the_key_only_through_the_aws_services_it_calls(service):
    statements = _kms_statements(load(service))
    actions = {a for s in statements for a in s["Action"]}
    assert actions == {"kms:Decrypt", "kms:GenerateDataKey"}  # never Encrypt, CreateGrant, key administration
    for statement in statements:
        assert statement["Effect"] == "Allow" and statement["Resource"] == [KEY]
        via = statement["Condition"]["StringEquals"]["kms:ViaService"]
        assert all(v.endswith(f".{REGION}.amazonaws.com") for v in via)
        services = {v.split(".")[0] for v in via}
        if statement["Action"] == ["kms:Decrypt"]:
            assert services == {"dynamodb", "s3", "sqs"}  # every role reads tables, objects and its queue
        else:
            # data keys to send messages; to write objects only for roles that write objects
            assert services == ({"sqs"} if service == "results" else {"s3", "sqs"})


@pytest.mark.parametrize("service", STAGES)
def test_the_audit_trail_is_append_only_for_every_role(service):
    policy = load(service)
    assert allowed(policy, "s3:PutObject", AUDIT_RECORD) == (service in AUDIT_WRITERS)
    for action in ("s3:DeleteObject", "s3:DeleteObjectVersion", "s3:PutObjectRetention",
                   "s3:BypassGovernanceRetention", "s3:PutObjectLegalHold"):
        assert not allowed(policy, action, AUDIT_RECORD), action
    assert allowed(policy, "s3:GetObjectVersion", AUDIT_RECORD) == (service == "results")  # GET /api/v1/audit
    for action in ("s3:PutBucketObjectLockConfiguration", "s3:PutBucketPolicy", "s3:DeleteBucket"):
        assert not allowed(policy, action, f"arn:aws:s3:::{SETTINGS.audit_bucket}")


def test_identity_tables_are_reached_only_by_the_apis():
    keys, links = TABLE + SETTINGS.api_keys_table, TABLE + SETTINGS.patient_links_table
    for service in STAGES:
        policy = load(service)
        assert allowed(policy, "dynamodb:GetItem", keys) == (service in ("ingest", "results"))
        assert allowed(policy, "dynamodb:PutItem", keys) == (service == "results")  # clinic admins create keys
        assert allowed(policy, "dynamodb:PutItem", links) == (service == "ingest")  # links are issued by ingest
        assert allowed(policy, "dynamodb:UpdateItem", links) == (service == "ingest")  # ... and used up there
        assert allowed(policy, "dynamodb:DeleteItem", links) == (service == "results")  # erasure
        assert allowed(policy, "dynamodb:UpdateItem", TABLE + SETTINGS.rate_limits_table) == (service == "ingest")
        assert allowed(policy, "dynamodb:PutItem", TABLE + SETTINGS.erasures_table) == (service == "results")
