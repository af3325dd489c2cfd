"""The AWS resources SchizoDot runs on, defined once.

`ensure_infrastructure` creates them idempotently; the embedded stack, the test
suite and the compose init step all call it, so there is one source of truth.
Tables, keys and the GSI follow shared/docs/DYNAMODB_SCHEMA.md exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from botocore.exceptions import ClientError

from shared.aws import sync_client
from shared.job import PATIENT_JOBS_INDEX
from shared.settings import CommonSettings
from shared.topology import STAGES

UPLOAD_PREFIX = "uploads/"
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


def ensure_queues(settings: CommonSettings) -> QueueUrls:
    sqs = sync_client(settings, "sqs")
    queues: dict[str, str] = {}
    dlqs: dict[str, str] = {}
    for stage in STAGES:
        dlq_url = sqs.create_queue(
            QueueName=settings.dead_letter_queue_name(stage),
            Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)},
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        attributes = {
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


def ensure_tables(settings: CommonSettings) -> None:
    dynamodb = sync_client(settings, "dynamodb")
    existing = set(dynamodb.list_tables()["TableNames"])
    for definition in (
        jobs_table_definition(settings.jobs_table),
        users_table_definition(settings.users_table),
    ):
        if definition["TableName"] not in existing:
            dynamodb.create_table(**definition)
            dynamodb.get_waiter("table_exists").wait(TableName=definition["TableName"])


def ensure_bucket(settings: CommonSettings, ingest_queue_url: str) -> None:
    """The media bucket, with uploads under `uploads/` announced on the ingest queue."""
    s3 = sync_client(settings, "s3")
    sqs = sync_client(settings, "sqs")
    try:
        if settings.aws_region == "us-east-1":
            s3.create_bucket(Bucket=settings.bucket)
        else:
            s3.create_bucket(
                Bucket=settings.bucket,
                CreateBucketConfiguration={"LocationConstraint": settings.aws_region},
            )
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
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
    urls = ensure_queues(settings)
    ensure_tables(settings)
    ensure_bucket(settings, urls.queues["ingest"])
    from services.results.alerts.infra import ensure_alert_resources  # issue 13: alerts tables and queue
    ensure_alert_resources(settings)
    return urls


if __name__ == "__main__":
    created = ensure_infrastructure(CommonSettings())
    print(json.dumps({"queues": created.queues, "dead_letter_queues": created.dead_letter_queues}, indent=2))
