"""The AWS resources SchizoDot runs on, defined once.

`ensure_infrastructure` creates them idempotently; the embedded stack, the test
suite and the compose init step all call it, so there is one source of truth.
Tables, keys and the GSI follow shared/docs/DYNAMODB_SCHEMA.md exactly.

Protected health information is encrypted at rest with one customer-managed KMS
key (`SCHIZODOT_KMS_KEY_ALIAS`): S3 default encryption (SSE-KMS, bucket key),
SQS server-side encryption, DynamoDB tables. The media bucket and the audit
bucket refuse plain-HTTP requests and writes asking for another encryption or
key (bucket policy; `bucket_policy_document`). Raw media expire after
`SCHIZODOT_MEDIA_RETENTION_DAYS` (lifecycle rule); findings stay until erased.
No table has point-in-time recovery: its backups would keep an erased patient's
data for 35 days. The audit bucket is under Object Lock (shared.identity.audit).

The bucket policy is applied on real AWS and wherever `SCHIZODOT_BUCKET_POLICY=enforce`;
`auto` (the default) leaves it off on a local endpoint (`AWS_ENDPOINT_URL`): moto
evaluates a policy's conditions without the request's context, so its
`aws:SecureTransport` and encryption conditions would deny every object request,
over HTTPS too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from botocore.exceptions import ClientError

from shared.aws.clients import sync_client
from shared.domain.job import PATIENT_JOBS_INDEX
from shared.runtime.topology import STAGES, WORK_QUEUES
from shared.settings import CommonSettings

UPLOAD_PREFIX = "uploads/"
EHR_MEDIA_PREFIX = "incoming/"  # media an EHR event points at: incoming/<clinic>/...
ALERTS_QUEUE = "alerts"  # shared.runtime.topology.WORK_QUEUES: schizodot-alerts and schizodot-alerts-dlq
# SchizodotAlerts' indexes: a clinic's open alerts (sparse: `open_since` exists only while
# an alert is open) and one patient's alerts (`patient_key`, shared.identity.principal.patient_key).
OPEN_ALERTS_INDEX = "clinic_id-open_since-index"
PATIENT_ALERTS_INDEX = "patient_key-alert_id-index"
# SchizodotConsoleSessions' index: a clinic's sessions by person (sparse: sign-ins in
# progress have no subject), for "end all sessions of this person".
SESSIONS_BY_PERSON_INDEX = "clinic_id-subject-index"
_THROUGHPUT = {"ReadCapacityUnits": 5, "WriteCapacityUnits": 5}


def jobs_table_definition(name: str) -> dict:
    return {
        "TableName": name,
        "AttributeDefinitions": [
            {"AttributeName": "job_id", "AttributeType": "S"},
            {"AttributeName": "patient_id", "AttributeType": "S"},
            {"AttributeName": "created_at", "AttributeType": "S"},
        ],
        "KeySchema": [{"AttributeName": "job_id", "KeyType": "HASH"}],
        "GlobalSecondaryIndexes": [
            {
                "IndexName": PATIENT_JOBS_INDEX,
                "KeySchema": [
                    {"AttributeName": "patient_id", "KeyType": "HASH"},
                    {"AttributeName": "created_at", "KeyType": "RANGE"},
                ],
                "Projection": {"ProjectionType": "ALL"},
                "ProvisionedThroughput": _THROUGHPUT,
            }
        ],
        "ProvisionedThroughput": _THROUGHPUT,
    }


def _string_keys(hash_key: str, range_key: str | None = None) -> dict:
    names = [hash_key] + ([range_key] if range_key else [])
    return {
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": "S"} for n in names],
        "KeySchema": [{"AttributeName": hash_key, "KeyType": "HASH"}]
        + ([{"AttributeName": range_key, "KeyType": "RANGE"}] if range_key else []),
    }


def _index(name: str, hash_key: str, range_key: str | None = None) -> dict:
    return {"IndexName": name, "KeySchema": _string_keys(hash_key, range_key)["KeySchema"],
            "Projection": {"ProjectionType": "ALL"}, "ProvisionedThroughput": _THROUGHPUT}


def security_table_definitions(settings: CommonSettings) -> list[dict]:
    """Identity, abuse limits and erasures (issue 12); TTL attributes in `TTL_ATTRIBUTES`."""
    api_keys = _string_keys("key_id")
    api_keys["AttributeDefinitions"] += [{"AttributeName": "clinic_id", "AttributeType": "S"},
                                         {"AttributeName": "created_at", "AttributeType": "S"}]
    links = _string_keys("link_id")
    links["AttributeDefinitions"].append({"AttributeName": "patient_key", "AttributeType": "S"})
    return [
        {"TableName": settings.api_keys_table, **api_keys,
         "GlobalSecondaryIndexes": [_index("clinic_id-created_at-index", "clinic_id", "created_at")],
         "ProvisionedThroughput": _THROUGHPUT},
        {"TableName": settings.patient_links_table, **links,
         "GlobalSecondaryIndexes": [_index("patient_key-index", "patient_key")], "ProvisionedThroughput": _THROUGHPUT},
        {"TableName": settings.rate_limits_table, **_string_keys("bucket"), "ProvisionedThroughput": _THROUGHPUT},
        {"TableName": settings.erasures_table, **_string_keys("erasure_id"), "ProvisionedThroughput": _THROUGHPUT},
    ]


def clinic_table_definitions(settings: CommonSettings) -> list[dict]:
    """Alerts (key clinic + alert id) and the clinic's patients (key clinic + clinic-local patient id),
    both written by the results service only (services/results/alerts)."""
    alerts = _string_keys("clinic_id", "alert_id")
    alerts["AttributeDefinitions"] += [{"AttributeName": "open_since", "AttributeType": "S"},
                                       {"AttributeName": "patient_key", "AttributeType": "S"}]
    return [
        {"TableName": settings.alerts_table, **alerts,
         "GlobalSecondaryIndexes": [_index(OPEN_ALERTS_INDEX, "clinic_id", "open_since"),
                                    _index(PATIENT_ALERTS_INDEX, "patient_key", "alert_id")],
         "ProvisionedThroughput": _THROUGHPUT},
        {"TableName": settings.clinic_patients_table, **_string_keys("clinic_id", "patient_id"),
         "ProvisionedThroughput": _THROUGHPUT},
        console_sessions_table_definition(settings.console_sessions_table),
    ]


def console_sessions_table_definition(name: str) -> dict:
    """The console's server-side sessions (key: SHA-256 of the cookie's secret) and sign-ins in
    progress (key: SHA-256 of the OIDC `state`); TTL `expires_at` (services/results/console/sessions.py)."""
    sessions = _string_keys("session_id")
    sessions["AttributeDefinitions"] += [{"AttributeName": "clinic_id", "AttributeType": "S"},
                                         {"AttributeName": "subject", "AttributeType": "S"}]
    return {"TableName": name, **sessions,
            "GlobalSecondaryIndexes": [_index(SESSIONS_BY_PERSON_INDEX, "clinic_id", "subject")],
            "ProvisionedThroughput": _THROUGHPUT}


def ttl_attributes(settings: CommonSettings) -> dict[str, str]:
    return {settings.patient_links_table: "expires_at", settings.rate_limits_table: "expires_at",
            settings.console_sessions_table: "expires_at"}


def users_table_definition(name: str) -> dict:
    return {
        "TableName": name,
        "AttributeDefinitions": [
            {"AttributeName": "user_id", "AttributeType": "S"},
            {"AttributeName": "timestamp", "AttributeType": "S"},
        ],
        "KeySchema": [
            {"AttributeName": "user_id", "KeyType": "HASH"},
            {"AttributeName": "timestamp", "KeyType": "RANGE"},
        ],
        "ProvisionedThroughput": _THROUGHPUT,
    }


@dataclass(frozen=True)
class QueueUrls:
    queues: dict[str, str]
    dead_letter_queues: dict[str, str]


def queue_encryption(settings: CommonSettings) -> dict[str, str]:
    """SQS server-side encryption with the customer-managed key (data keys reused for 5 minutes)."""
    return {"KmsMasterKeyId": settings.kms_key_alias, "KmsDataKeyReusePeriodSeconds": "300"}


def ensure_queues(settings: CommonSettings) -> QueueUrls:
    sqs = sync_client(settings, "sqs")
    queues: dict[str, str] = {}
    dlqs: dict[str, str] = {}
    encryption = queue_encryption(settings)
    for stage in (*STAGES, *WORK_QUEUES):
        dlq_attributes = {"MessageRetentionPeriod": str(14 * 24 * 3600), **encryption}
        try:
            dlq_url = sqs.create_queue(QueueName=settings.dead_letter_queue_name(stage),
                                       Attributes=dlq_attributes)["QueueUrl"]
        except ClientError as error:  # exists without encryption: bring it in line
            if error.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            dlq_url = sqs.get_queue_url(QueueName=settings.dead_letter_queue_name(stage))["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes=dlq_attributes)
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attributes = {
            **encryption,
            "VisibilityTimeout": str(settings.visibility_timeout_seconds),
            "RedrivePolicy": json.dumps(
                {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(settings.max_receive_count)}
            ),
        }
        try:
            url = sqs.create_queue(QueueName=settings.queue_name(stage), Attributes=attributes)[
                "QueueUrl"
            ]
        except ClientError as error:  # exists with other attributes: bring it in line
            if error.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
                raise
            url = sqs.get_queue_url(QueueName=settings.queue_name(stage))["QueueUrl"]
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
        queues[stage] = url
        dlqs[stage] = dlq_url
    return QueueUrls(queues, dlqs)


def table_encryption(key_arn: str) -> dict:
    return {"SSESpecification": {"Enabled": True, "SSEType": "KMS", "KMSMasterKeyId": key_arn}}


def ensure_tables(settings: CommonSettings, key_arn: str | None = None) -> None:
    dynamodb = sync_client(settings, "dynamodb")
    key_arn = key_arn or ensure_kms_key(settings)
    existing = set(dynamodb.list_tables()["TableNames"])
    for definition in (
        jobs_table_definition(settings.jobs_table),
        users_table_definition(settings.users_table),
        *security_table_definitions(settings),
        *clinic_table_definitions(settings),
    ):
        if definition["TableName"] not in existing:
            dynamodb.create_table(**definition, **table_encryption(key_arn))
            dynamodb.get_waiter("table_exists").wait(TableName=definition["TableName"])
    for table, attribute in ttl_attributes(settings).items():
        if dynamodb.describe_time_to_live(TableName=table)["TimeToLiveDescription"].get("TimeToLiveStatus") \
                not in ("ENABLED", "ENABLING"):
            dynamodb.update_time_to_live(TableName=table,
                                         TimeToLiveSpecification={"Enabled": True, "AttributeName": attribute})


def ensure_kms_key(settings: CommonSettings) -> str:
    """The customer-managed key behind `SCHIZODOT_KMS_KEY_ALIAS` (made, with yearly rotation, if missing); its ARN."""
    kms = sync_client(settings, "kms")
    try:
        return kms.describe_key(KeyId=settings.kms_key_alias)["KeyMetadata"]["Arn"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "NotFoundException":
            raise
    key = kms.create_key(Description="SchizoDot: protected health information at rest",
                         KeyUsage="ENCRYPT_DECRYPT", Tags=[{"TagKey": "app", "TagValue": "schizodot"}])["KeyMetadata"]
    kms.enable_key_rotation(KeyId=key["KeyId"])
    try:
        kms.create_alias(AliasName=settings.kms_key_alias, TargetKeyId=key["KeyId"])
    except ClientError as error:  # another provisioner won the race: use its key
        if error.response["Error"]["Code"] != "AlreadyExistsException":
            raise
        kms.schedule_key_deletion(KeyId=key["KeyId"], PendingWindowInDays=7)
        return kms.describe_key(KeyId=settings.kms_key_alias)["KeyMetadata"]["Arn"]
    return key["Arn"]


def bucket_policy_document(bucket: str, key_arn: str) -> dict:
    """TLS only; writes only under SSE-KMS with our key (or the bucket default, which is it); no SSE-C."""
    bucket_arn = f"arn:aws:s3:::{bucket}"
    objects = f"{bucket_arn}/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "DenyInsecureTransport", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": [bucket_arn, objects], "Condition": {"Bool": {"aws:SecureTransport": "false"}}},
            {"Sid": "DenyOtherEncryption", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": objects,
             "Condition": {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "aws:kms"}}},
            {"Sid": "DenyOtherKmsKey", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": objects,
             "Condition": {"StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption-aws-kms-key-id": key_arn}}},
            {"Sid": "DenyCustomerProvidedKeys", "Effect": "Deny", "Principal": "*", "Action": "s3:PutObject",
             "Resource": objects,
             "Condition": {"Null": {"s3:x-amz-server-side-encryption-customer-algorithm": "false"}}},
        ],
    }


def browser_cors(settings: CommonSettings) -> dict | None:
    """The media bucket's CORS rule for the patient page's uploads (presigned UploadPart
    PUTs, or the presigned POST) and the console's presigned GETs of video and evidence
    frames; None when no browser origin is configured (`SCHIZODOT_BROWSER_ORIGINS`)."""
    if not settings.browser_origins:
        return None
    return {"CORSRules": [{"ID": "schizodot-browsers", "AllowedOrigins": list(settings.browser_origins),
                           "AllowedMethods": ["GET", "HEAD", "PUT", "POST"],
                           "AllowedHeaders": ["content-type", "range"], "MaxAgeSeconds": 600}]}


def media_lifecycle(settings: CommonSettings) -> dict:
    """Raw media expire after the retention period; unfinished multipart uploads after a day."""
    days = settings.media_retention_days
    return {"Rules": [
        {"ID": "raw-media-retention", "Status": "Enabled", "Filter": {"Prefix": UPLOAD_PREFIX},
         "Expiration": {"Days": days}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
        {"ID": "ehr-media-retention", "Status": "Enabled", "Filter": {"Prefix": EHR_MEDIA_PREFIX},
         "Expiration": {"Days": days}, "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]}


def _policy_applies(settings: CommonSettings) -> bool:
    return settings.bucket_policy == "enforce" or (settings.bucket_policy == "auto" and not settings.aws_endpoint_url)


def _create_bucket(s3, settings: CommonSettings, bucket: str, **options) -> None:
    try:
        if settings.aws_region == "us-east-1":
            s3.create_bucket(Bucket=bucket, **options)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": settings.aws_region},
                             **options)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _protect_bucket(s3, settings: CommonSettings, bucket: str, key_arn: str) -> None:
    s3.put_bucket_encryption(Bucket=bucket, ServerSideEncryptionConfiguration={"Rules": [
        {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_arn},
         "BucketKeyEnabled": True}]})
    s3.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
        "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
    if _policy_applies(settings):
        s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps(bucket_policy_document(bucket, key_arn)))


def ensure_audit_bucket(settings: CommonSettings, key_arn: str) -> None:
    """The append-only audit trail: Object Lock in compliance mode (shared.identity.audit says why)."""
    s3 = sync_client(settings, "s3")
    _create_bucket(s3, settings, settings.audit_bucket, ObjectLockEnabledForBucket=True)
    lock = {"ObjectLockEnabled": "Enabled",
            "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Days": settings.audit_retention_days}}}
    current = s3.get_object_lock_configuration(Bucket=settings.audit_bucket).get("ObjectLockConfiguration", {})
    if current.get("Rule", {}).get("DefaultRetention", {}).get("Days") != settings.audit_retention_days \
            or current.get("Rule", {}).get("DefaultRetention", {}).get("Mode") != "COMPLIANCE":
        s3.put_object_lock_configuration(Bucket=settings.audit_bucket, ObjectLockConfiguration=lock)
    _protect_bucket(s3, settings, settings.audit_bucket, key_arn)


def ensure_bucket(settings: CommonSettings, ingest_queue_url: str, key_arn: str | None = None) -> None:
    """The media bucket, with uploads under `uploads/` announced on the ingest queue."""
    s3 = sync_client(settings, "s3")
    sqs = sync_client(settings, "sqs")
    key_arn = key_arn or ensure_kms_key(settings)
    _create_bucket(s3, settings, settings.bucket)
    _protect_bucket(s3, settings, settings.bucket, key_arn)
    s3.put_bucket_lifecycle_configuration(Bucket=settings.bucket, LifecycleConfiguration=media_lifecycle(settings))
    cors = browser_cors(settings)
    if cors is not None:
        s3.put_bucket_cors(Bucket=settings.bucket, CORSConfiguration=cors)
    queue_arn = sqs.get_queue_attributes(QueueUrl=ingest_queue_url, AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    # On real AWS S3 may only publish to the queue if the queue policy allows it.
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "AllowMediaBucketNotifications",
                "Effect": "Allow",
                "Principal": {"Service": "s3.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{settings.bucket}"}},
            }
        ],
    }
    sqs.set_queue_attributes(QueueUrl=ingest_queue_url, Attributes={"Policy": json.dumps(policy)})
    s3.put_bucket_notification_configuration(
        Bucket=settings.bucket,
        NotificationConfiguration={
            "QueueConfigurations": [
                {
                    "Id": "schizodot-uploads-to-ingest",
                    "QueueArn": queue_arn,
                    "Events": ["s3:ObjectCreated:*"],
                    "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": UPLOAD_PREFIX}]}},
                }
            ]
        },
    )


def ensure_infrastructure(settings: CommonSettings) -> QueueUrls:
    key_arn = ensure_kms_key(settings)
    urls = ensure_queues(settings)
    ensure_tables(settings, key_arn)
    ensure_bucket(settings, urls.queues["ingest"], key_arn)
    ensure_audit_bucket(settings, key_arn)
    return urls


if __name__ == "__main__":
    created = ensure_infrastructure(CommonSettings())
    print(json.dumps({"queues": created.queues, "dead_letter_queues": created.dead_letter_queues}, indent=2))
