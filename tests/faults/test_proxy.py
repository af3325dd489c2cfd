"""The fault proxy speaks each service's wire format, and botocore's retry
modes (standard, as configured in shared.aws.clients) ride out what it injects."""

from __future__ import annotations

import time
import uuid
from urllib.parse import urlparse

import httpx
import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from shared.aws.clients import sync_client
from tests.faults.proxy import FaultProxy, FaultRates


@pytest.fixture
def proxy(aws_server):
    upstream = urlparse(aws_server.aws_endpoint_url)
    running = FaultProxy((upstream.hostname, upstream.port), seed=7).start()
    yield running
    running.stop()


def _through(settings, proxy: FaultProxy, attempts: int):
    return settings.model_copy(update={"aws_endpoint_url": f"http://127.0.0.1:{proxy.port}",
                                       "aws_max_attempts": attempts})


def _code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


def test_throttling_in_each_services_format(aws_server, proxy):
    settings = _through(aws_server, proxy, attempts=1)
    proxy.set_rates(FaultRates(throttle=1.0))
    codes = {"dynamodb": set(), "sqs": set(), "s3": set()}
    dynamodb, sqs, s3 = (sync_client(settings, name) for name in ("dynamodb", "sqs", "s3"))
    for _ in range(12):
        with pytest.raises(ClientError) as caught:
            dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": "x"}})
        codes["dynamodb"].add(_code(caught.value))
        with pytest.raises(ClientError) as caught:
            sqs.get_queue_url(QueueName=settings.queue_name("audio"))
        codes["sqs"].add(_code(caught.value))
        with pytest.raises(ClientError) as caught:
            s3.put_object(Bucket=settings.bucket, Key="t/x", Body=b"x")
        codes["s3"].add(_code(caught.value))
    assert codes == {"dynamodb": {"ProvisionedThroughputExceededException", "ThrottlingException"},
                     "sqs": {"RequestThrottled", "ThrottlingException"}, "s3": {"SlowDown"}}


def test_server_errors_are_500_or_503_and_retried_by_botocore(aws_server, proxy):
    proxy.set_rates(FaultRates(server_error=1.0))
    with pytest.raises(ClientError) as caught:
        sync_client(_through(aws_server, proxy, attempts=3), "dynamodb").get_item(
            TableName=aws_server.jobs_table, Key={"job_id": {"S": "x"}})
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] in (500, 503)
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2  # standard mode retried it


def test_throttling_and_dropped_connections_are_retried(aws_server, proxy):
    proxy.set_rates(FaultRates(throttle=1.0))
    with pytest.raises(ClientError) as caught:
        sync_client(_through(aws_server, proxy, attempts=3), "sqs").get_queue_url(
            QueueName=aws_server.queue_name("audio"))
    assert caught.value.response["ResponseMetadata"]["RetryAttempts"] == 2
    proxy.set_rates(FaultRates(drop_before=1.0))
    with pytest.raises(ConnectionClosedError):
        sync_client(_through(aws_server, proxy, attempts=2), "s3").head_bucket(Bucket=aws_server.bucket)
    assert proxy.counts[("s3", "drop_before")] == 2  # tried twice


def test_everything_gets_through_a_faulty_network(aws_server, proxy):
    """A third of all requests faulted: the default retry settings still
    deliver every write and read, in order, and nothing twice."""
    proxy.set_rates(FaultRates(throttle=0.08, server_error=0.08, drop_before=0.04, latency=0.1,
                               latency_seconds=(0.01, 0.05)))
    settings = _through(aws_server, proxy, attempts=aws_server.aws_max_attempts)
    dynamodb, sqs, s3 = (sync_client(settings, name) for name in ("dynamodb", "sqs", "s3"))
    run = uuid.uuid4().hex[:8]
    queue = sqs.get_queue_url(QueueName=settings.queue_name("fusion"))["QueueUrl"]
    for index in range(15):
        dynamodb.put_item(TableName=settings.users_table, Item={
            "user_id": {"S": f"faulty-{run}"}, "timestamp": {"S": f"2026-01-01T00:00:{index:02d}Z"},
            "n": {"N": str(index)}})
        sqs.send_message(QueueUrl=queue, MessageBody=f"{run}-{index}")
        s3.put_object(Bucket=settings.bucket, Key=f"faulty/{run}/{index}", Body=str(index).encode())
    items = sync_client(aws_server, "dynamodb").query(
        TableName=settings.users_table, KeyConditionExpression="user_id = :u",
        ExpressionAttributeValues={":u": {"S": f"faulty-{run}"}})["Items"]
    assert sorted(int(item["n"]["N"]) for item in items) == list(range(15))
    bodies = []
    direct = sync_client(aws_server, "sqs")
    while True:
        messages = direct.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
        if not messages:
            break
        for message in messages:
            bodies.append(message["Body"])
            direct.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
    assert sorted(b for b in bodies if b.startswith(run)) == sorted(f"{run}-{i}" for i in range(15))
    assert sync_client(aws_server, "s3").get_object(Bucket=settings.bucket, Key=f"faulty/{run}/14")["Body"].read() == b"14"
    faulted = sum(n for (_, fault), n in proxy.counts.items() if fault not in ("ok", "latency"))
    assert faulted >= 5, proxy.summary()


def test_a_dropped_answer_to_a_write_that_happened_is_the_retry_trap(aws_server, proxy):
    """The write lands, its answer is lost, botocore retries: a conditional
    write then fails its own condition. Callers must recognise this (issue 14)."""
    proxy.set_rates(FaultRates(drop_after=1.0))
    settings = _through(aws_server, proxy, attempts=2)
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    with pytest.raises(Exception):  # first answer dropped; the retry's answer dropped too
        sync_client(settings, "dynamodb").put_item(
            TableName=settings.jobs_table, Item={"job_id": {"S": job_id}},
            ConditionExpression="attribute_not_exists(job_id)")
    proxy.set_rates(FaultRates())
    stored = sync_client(aws_server, "dynamodb").get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}})
    assert "Item" in stored  # it was written although the client never heard so
    proxy.set_rates(FaultRates(drop_after=0.0))
    with pytest.raises(ClientError) as caught:  # what the retry met
        sync_client(settings, "dynamodb").put_item(
            TableName=settings.jobs_table, Item={"job_id": {"S": job_id}},
            ConditionExpression="attribute_not_exists(job_id)")
    assert _code(caught.value) == "ConditionalCheckFailedException"


def test_latency_and_presigned_uploads(aws_server, proxy):
    settings = _through(aws_server, proxy, attempts=1)
    proxy.set_rates(FaultRates(latency=1.0, latency_seconds=(0.3, 0.3)))
    started = time.monotonic()
    sync_client(settings, "s3").head_bucket(Bucket=settings.bucket)
    assert time.monotonic() - started >= 0.3
    url = sync_client(settings, "s3").generate_presigned_url(
        "put_object", Params={"Bucket": settings.bucket, "Key": "presigned/x", "ContentType": "video/mp4"})
    proxy.set_rates(FaultRates(throttle=1.0))
    refused = httpx.put(url, content=b"data", headers={"Content-Type": "video/mp4"})
    assert refused.status_code == 503 and b"<Code>SlowDown</Code>" in refused.content
    proxy.set_rates(FaultRates())
    assert httpx.put(url, content=b"data", headers={"Content-Type": "video/mp4"}).status_code == 200
