"""The embedded AWS server keeps tables, items, queues, messages (with their
receive state), objects and configuration across a SIGKILL, and starts empty
after its data is deleted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schizodot.stack import REPO_ROOT, wait_for_port
from shared.aws.clients import sync_client
from shared.runtime.infra import PATIENT_JOBS_INDEX, ensure_infrastructure
from shared.settings import CommonSettings
from tests.conftest import free_port


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        self.settings = CommonSettings(aws_endpoint_url=f"http://127.0.0.1:{self.port}", aws_region="us-east-1")

    def start(self) -> "Server":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_aws", "-p", str(self.port), "--data-dir", str(self.data_dir)],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
        wait_for_port(self.port, 60)
        return self

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def client(self, service: str):
        return sync_client(self.settings, service)


@pytest.fixture
def server(tmp_path):
    running = Server(tmp_path / "aws").start()
    yield running
    if running.process.poll() is None:
        running.process.terminate()
        running.process.wait(10)


def test_state_survives_a_sigkill(server):
    settings = server.settings
    ensure_infrastructure(settings)
    dynamodb, sqs, s3 = server.client("dynamodb"), server.client("sqs"), server.client("s3")
    for index in range(5):
        dynamodb.put_item(TableName=settings.jobs_table, Item={
            "job_id": {"S": f"job-{index}"}, "patient_id": {"S": "patient-a"},
            "created_at": {"S": f"2026-01-0{index + 1}T00:00:00Z"}, "status": {"S": "queued"}})
    dynamodb.update_item(TableName=settings.jobs_table, Key={"job_id": {"S": "job-1"}},
                         UpdateExpression="SET #s = :s ADD progress :p", ExpressionAttributeNames={"#s": "status"},
                         ExpressionAttributeValues={":s": {"S": "completed"}, ":p": {"N": "100"}})
    dynamodb.delete_item(TableName=settings.jobs_table, Key={"job_id": {"S": "job-2"}})
    dynamodb.transact_write_items(TransactItems=[{"Put": {"TableName": settings.users_table, "Item": {
        "user_id": {"S": "patient-a"}, "timestamp": {"S": "2026-01-01T00:00:00Z"}, "job_id": {"S": "job-1"}}}}])
    queue = sqs.get_queue_url(QueueName=settings.queue_name("audio"))["QueueUrl"]
    for body in ("first", "second", "third"):
        sqs.send_message(QueueUrl=queue, MessageBody=body,
                         MessageAttributes={"traceparent": {"DataType": "String", "StringValue": "00-ab-cd-01"}})
    in_flight = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=3)["Messages"][0]
    done = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=30)["Messages"][0]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=done["ReceiptHandle"])
    s3.put_object(Bucket=settings.bucket, Key="artifacts/job-1/audio.json", Body=b'{"ok": true}',
                  ContentType="application/json", Metadata={"stage": "audio"})

    server.kill()
    server.start()

    assert dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": "job-1"}})["Item"]["progress"] == {"N": "100"}
    assert "Item" not in dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": "job-2"}})
    newest = dynamodb.query(TableName=settings.jobs_table, IndexName=PATIENT_JOBS_INDEX, ScanIndexForward=False,
                            KeyConditionExpression="patient_id = :p",
                            ExpressionAttributeValues={":p": {"S": "patient-a"}})["Items"]
    assert [item["job_id"]["S"] for item in newest] == ["job-4", "job-3", "job-1", "job-0"]  # the GSI came back
    assert dynamodb.get_item(TableName=settings.users_table, Key={
        "user_id": {"S": "patient-a"}, "timestamp": {"S": "2026-01-01T00:00:00Z"}})["Item"]["job_id"] == {"S": "job-1"}
    stored = s3.get_object(Bucket=settings.bucket, Key="artifacts/job-1/audio.json")
    assert (stored["Body"].read(), stored["ContentType"], stored["Metadata"]) == (
        b'{"ok": true}', "application/json", {"stage": "audio"})
    # The notification to the ingest queue and the queues' redrive policies came back too.
    configuration = s3.get_bucket_notification_configuration(Bucket=settings.bucket)
    assert configuration["QueueConfigurations"][0]["QueueArn"].endswith(settings.queue_name("ingest"))
    assert "RedrivePolicy" in sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]

    # The message still in flight keeps its visibility, comes back when it lapses,
    # with its id, attributes and receive count; the one still waiting is there.
    waiting = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                  MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert [m["Body"] for m in waiting] == ["third"]
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=done["ReceiptHandle"])  # a retried delete still succeeds
    time.sleep(3.5)
    again = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                MessageSystemAttributeNames=["ApproximateReceiveCount"])["Messages"]
    assert [(m["MessageId"], m["Body"], m["Attributes"]["ApproximateReceiveCount"]) for m in again] == [
        (in_flight["MessageId"], "first", "2")]
    assert again[0]["MessageAttributes"]["traceparent"]["StringValue"] == "00-ab-cd-01"


def test_a_worker_that_outlived_the_restart_deletes_with_its_receipt_handle(server):
    settings = server.settings
    ensure_infrastructure(settings)
    sqs = server.client("sqs")
    queue = sqs.get_queue_url(QueueName=settings.queue_name("vision"))["QueueUrl"]
    sqs.send_message(QueueUrl=queue, MessageBody="work")
    held = sqs.receive_message(QueueUrl=queue, VisibilityTimeout=60)["Messages"][0]
    server.kill()
    server.start()
    sqs.change_message_visibility(QueueUrl=queue, ReceiptHandle=held["ReceiptHandle"], VisibilityTimeout=60)
    sqs.delete_message(QueueUrl=queue, ReceiptHandle=held["ReceiptHandle"])
    server.kill()
    server.start()
    attributes = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["All"])["Attributes"]
    assert (attributes["ApproximateNumberOfMessages"], attributes["ApproximateNumberOfMessagesNotVisible"]) == ("0", "0")


def test_deleting_the_data_starts_empty(server, tmp_path):
    ensure_infrastructure(server.settings)
    server.process.terminate()
    server.process.wait(10)
    import shutil

    shutil.rmtree(server.data_dir)
    server.start()
    assert server.client("dynamodb").list_tables()["TableNames"] == []


def test_a_multipart_upload_resumes_across_a_sigkill(server):
    """The patient page uploads in parts; a restart between parts must not lose them."""
    settings = server.settings
    ensure_infrastructure(settings)
    s3 = server.client("s3")
    key = "uploads/patient-a/job-0123456789ab/checkin.webm"
    first, second = os.urandom(5 * 1024 * 1024), os.urandom(1024)
    upload = s3.create_multipart_upload(Bucket=settings.bucket, Key=key, ContentType="video/webm")["UploadId"]
    etag = s3.upload_part(Bucket=settings.bucket, Key=key, UploadId=upload, PartNumber=1, Body=first)["ETag"]
    server.kill()
    server.start()
    parts = s3.list_parts(Bucket=settings.bucket, Key=key, UploadId=upload)["Parts"]
    assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in parts] == [(1, etag, len(first))]
    etag2 = s3.upload_part(Bucket=settings.bucket, Key=key, UploadId=upload, PartNumber=2, Body=second)["ETag"]
    s3.complete_multipart_upload(Bucket=settings.bucket, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": 1, "ETag": etag}, {"PartNumber": 2, "ETag": etag2}]})
    server.kill()
    server.start()
    stored = s3.get_object(Bucket=settings.bucket, Key=key)
    assert stored["Body"].read() == first + second and stored["ContentType"] == "video/webm"
    assert s3.list_multipart_uploads(Bucket=settings.bucket).get("Uploads", []) == []  # completed: not kept


def test_the_protection_of_phi_survives_a_sigkill_and_provisioning_again(server):
    """The KMS key keeps its id and material (what the tables, queues and buckets
    name, and what decrypts earlier ciphertexts), the audit bucket its Object Lock;
    so the supervisor's provisioning after a restart, with records already in the
    audit bucket, changes nothing."""
    settings = server.settings
    ensure_infrastructure(settings)
    kms, s3, dynamodb = server.client("kms"), server.client("s3"), server.client("dynamodb")
    key = kms.describe_key(KeyId=settings.kms_key_alias)["KeyMetadata"]
    sealed = kms.encrypt(KeyId=settings.kms_key_alias, Plaintext=b"phi")["CiphertextBlob"]
    lock = s3.get_object_lock_configuration(Bucket=settings.audit_bucket)["ObjectLockConfiguration"]
    s3.put_object(Bucket=settings.audit_bucket, Key="audit/dev-clinic/record.json", Body=b"{}")

    for _ in range(2):  # the second time after provisioning again has repeated every set-up request
        server.kill()
        server.start()

        assert kms.describe_key(KeyId=settings.kms_key_alias)["KeyMetadata"]["Arn"] == key["Arn"]
        assert kms.get_key_rotation_status(KeyId=key["KeyId"])["KeyRotationEnabled"]
        assert kms.list_resource_tags(KeyId=key["KeyId"])["Tags"] == [{"TagKey": "app", "TagValue": "schizodot"}]
        assert kms.decrypt(CiphertextBlob=sealed)["Plaintext"] == b"phi"
        assert s3.get_object_lock_configuration(Bucket=settings.audit_bucket)["ObjectLockConfiguration"] == lock
        ensure_infrastructure(settings)  # what the supervisor does after restarting the AWS server
        assert [k["KeyId"] for k in kms.list_keys()["Keys"]] == [key["KeyId"]]
    described = dynamodb.describe_table(TableName=settings.jobs_table)["Table"]
    assert described["SSEDescription"]["KMSMasterKeyArn"] == key["Arn"]


def test_a_completed_multipart_upload_notifies_ingest_once(server):
    """S3 sends one ObjectCreated event for a multipart upload's object; moto sent two
    (Put, then CompleteMultipartUpload), and ingest processed every recording the upload
    proxy wrote twice."""
    settings = server.settings
    queues = ensure_infrastructure(settings)
    s3, sqs = server.client("s3"), server.client("sqs")
    ingest = queues.queues["ingest"]
    sqs.purge_queue(QueueUrl=ingest)  # the notification set-up's s3:TestEvent
    key = "uploads/patient-a/job-0123456789ab/checkin.webm"
    upload = s3.create_multipart_upload(Bucket=settings.bucket, Key=key, ContentType="video/webm")["UploadId"]
    etag = s3.upload_part(Bucket=settings.bucket, Key=key, UploadId=upload, PartNumber=1, Body=b"\x1aE\xdf\xa3" * 64)["ETag"]
    s3.complete_multipart_upload(Bucket=settings.bucket, Key=key, UploadId=upload,
                                 MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
    events = []
    for _ in range(3):  # until two empty receives in a row after the first message
        got = sqs.receive_message(QueueUrl=ingest, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
        events += [record["eventName"] for m in got for record in json.loads(m["Body"]).get("Records", [])]
    assert events == ["ObjectCreated:CompleteMultipartUpload"]
