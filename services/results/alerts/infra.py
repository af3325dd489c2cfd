"""The AWS resources alerts need, created idempotently like the rest (shared.infra calls this)."""

from __future__ import annotations

import json
from typing import Any

from botocore.exceptions import ClientError

from services.results.alerts.roster import ROSTER_TABLE, roster_table_definition
from services.results.alerts.store import ALERTS_TABLE, alerts_table_definition

ALERTS_QUEUE = "alerts"  # after the queue prefix: schizodot-alerts and schizodot-alerts-dlq


def ensure_alert_resources(settings: Any) -> dict[str, str]:
    """Tables SchizodotAlerts and SchizodotClinicPatients, and the alerts queue with its DLQ.

    Names come from the settings when they define them (`alerts_table`,
    `roster_table`), else the defaults. Returns the queue URLs.
    """
    from shared.aws import sync_client

    dynamodb = sync_client(settings, "dynamodb")
    existing = set(dynamodb.list_tables()["TableNames"])
    for definition in (alerts_table_definition(getattr(settings, "alerts_table", ALERTS_TABLE)),
                       roster_table_definition(getattr(settings, "roster_table", ROSTER_TABLE))):
        if definition["TableName"] not in existing:
            dynamodb.create_table(**definition)
            dynamodb.get_waiter("table_exists").wait(TableName=definition["TableName"])
    sqs = sync_client(settings, "sqs")
    name = settings.queue_name(ALERTS_QUEUE)
    dlq_url = sqs.create_queue(QueueName=settings.dead_letter_queue_name(ALERTS_QUEUE),
                               Attributes={"MessageRetentionPeriod": str(14 * 24 * 3600)})["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    attributes = {"VisibilityTimeout": str(settings.visibility_timeout_seconds),
                  "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn,
                                               "maxReceiveCount": str(settings.max_receive_count)})}
    try:
        url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    return {"queue": url, "dead_letter_queue": dlq_url}
