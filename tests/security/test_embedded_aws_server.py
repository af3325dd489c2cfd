"""Finding 1 of the security review (issue 19): the embedded AWS server accepted any caller.

It answered a forged signature, echoed any Origin in CORS headers, served
`/moto-api/reset` to anyone, listened wherever it was told, and kept patients'
media world-readable. Each test here failed on the code before the fix."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import httpx
import pytest
import yaml
from botocore.exceptions import ClientError

from shared.runtime.infra import ensure_infrastructure
from tests.security.aws_server import PATIENT_PAGE, AwsServer

pytestmark = pytest.mark.server
VIDEO = b"\x1aE\xdf\xa3 a patient's recording " * 64


@pytest.fixture(scope="module")
def aws(tmp_path_factory):
    server = AwsServer(tmp_path_factory.mktemp("aws") / "data").start()
    ensure_infrastructure_signed(server)
    server.client("s3").put_object(Bucket=server.settings.bucket, Key="uploads/p/job/video.mp4", Body=VIDEO,
                                   ContentType="video/mp4")
    yield server
    server.stop()


def ensure_infrastructure_signed(server: AwsServer) -> None:
    import os

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    from schizodot.stack import AWS_ACCESS_KEY
    from tests.security.aws_server import SECRET

    os.environ.update({"AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET})
    try:
        ensure_infrastructure(server.settings)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _code(error: ClientError) -> tuple[int, str]:
    return error.response["ResponseMetadata"]["HTTPStatusCode"], error.response["Error"]["Code"]


def test_embedded_aws_server_refuses_forged_signature(aws):
    bucket, key = aws.settings.bucket, "uploads/p/job/video.mp4"
    forged_s3, forged_dynamodb = aws.client("s3", secret="guessed"), aws.client("dynamodb", secret="guessed")
    with pytest.raises(ClientError) as refused:
        forged_s3.get_object(Bucket=bucket, Key=key)
    assert _code(refused.value) == (403, "SignatureDoesNotMatch")
    with pytest.raises(ClientError) as refused:
        forged_dynamodb.list_tables()
    assert _code(refused.value)[0] == 403
    # unsigned, as a web page or curl would send it
    assert httpx.get(f"{aws.endpoint}/{bucket}/{key}").status_code == 403
    # a presigned URL made with the wrong secret, or with its signature edited, or expired
    forged_url = forged_s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    assert httpx.get(forged_url).status_code == 403
    good = aws.client("s3")
    url = good.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=60)
    assert httpx.get(url).content == VIDEO  # the services' own presigned GETs still work
    assert httpx.get(url.replace("X-Amz-Signature=", "X-Amz-Signature=0")).status_code == 403
    assert httpx.get(url.replace(f"/{key}", "/uploads/p/job/other.mp4")).status_code == 403
    expiring = good.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=1)
    time.sleep(2.2)
    assert httpx.get(expiring).status_code == 403
    # the signed calls the services make all pass: items, queues, objects
    assert aws.settings.jobs_table in aws.client("dynamodb").list_tables()["TableNames"]
    assert aws.client("sqs").list_queues()["QueueUrls"]
    assert good.get_object(Bucket=bucket, Key=key)["Body"].read() == VIDEO


def test_embedded_aws_server_checks_presigned_uploads(aws):
    """A presigned PUT of a part with its signed length, and a presigned POST within its policy,
    pass; a forged POST policy, a bigger file or another content type than signed do not."""
    from shared.aws.storage import post_conditions

    s3, bucket = aws.client("s3"), aws.settings.bucket
    key = "uploads/p/job-post/video.webm"
    post = s3.generate_presigned_post(bucket, key, Fields={"Content-Type": "video/webm"},
                                      Conditions=post_conditions("video/webm", 1000), ExpiresIn=60)
    too_big = httpx.post(post["url"], data=post["fields"], files={"file": ("v.webm", b"x" * 1001, "video/webm")})
    assert too_big.status_code == 403 and "1001 bytes" in too_big.text
    retyped = httpx.post(post["url"], data={**post["fields"], "Content-Type": "text/html"},
                         files={"file": ("v.webm", b"x" * 10, "text/html")})
    assert retyped.status_code == 403
    forged = aws.client("s3", secret="guessed").generate_presigned_post(
        bucket, key, Fields={"Content-Type": "video/webm"}, Conditions=post_conditions("video/webm", 10**9))
    assert httpx.post(forged["url"], data=forged["fields"],
                      files={"file": ("v.webm", b"x" * 10, "video/webm")}).status_code == 403
    ok = httpx.post(post["url"], data=post["fields"], files={"file": ("v.webm", b"y" * 500, "video/webm")})
    assert ok.status_code in (200, 204), ok.text
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"y" * 500

    upload = s3.create_multipart_upload(Bucket=bucket, Key="uploads/p/job-parts/v.webm")["UploadId"]
    part_url = s3.generate_presigned_url("upload_part", Params={
        "Bucket": bucket, "Key": "uploads/p/job-parts/v.webm", "UploadId": upload, "PartNumber": 1,
        "ContentLength": 300}, ExpiresIn=60)
    assert httpx.put(part_url, content=b"z" * 301).status_code == 403  # not the signed length
    assert httpx.put(part_url, content=b"z" * 300).status_code == 200


def test_embedded_aws_server_serves_no_cors_and_no_moto_api(aws):
    bucket, key = aws.settings.bucket, "uploads/p/job/video.mp4"
    evil = {"Origin": "https://evil.example"}
    preflight = httpx.options(f"{aws.endpoint}/{bucket}/{key}",
                              headers={**evil, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 403
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    url = aws.client("s3").generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    answer = httpx.get(url, headers=evil)
    assert answer.status_code == 200 and not [h for h in answer.headers if h.lower().startswith("access-control-")]
    own = httpx.options(f"{aws.endpoint}/{bucket}/{key}",
                        headers={"Origin": PATIENT_PAGE, "Access-Control-Request-Method": "PUT"})
    assert own.status_code == 200 and own.headers["Access-Control-Allow-Origin"] == PATIENT_PAGE
    assert httpx.post(f"{aws.endpoint}/moto-api/reset", headers=evil).status_code == 403
    assert httpx.get(f"{aws.endpoint}/moto-api/data.json").status_code == 403
    assert aws.client("s3").get_object(Bucket=bucket, Key=key)["Body"].read() == VIDEO  # nothing was wiped


def test_embedded_aws_server_keeps_its_data_private(aws):
    assert stat.S_IMODE(aws.data_dir.stat().st_mode) == 0o700
    files = list(aws.data_dir.iterdir())
    assert files
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path.name


def test_embedded_aws_server_listens_on_loopback_only(aws):
    """Started without -H, it is bound to 127.0.0.1 (read from the kernel's socket table)."""
    listening = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port = local.split(":")
        if state == "0A" and int(port, 16) == aws.port:  # LISTEN
            listening.append(address)
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian


def test_compose_publishes_only_the_apis():
    """The AWS server (and the trace UI) are published on the host's loopback only; the APIs on the host."""
    compose = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
    for name, service in compose["services"].items():
        for published in service.get("ports", []):
            if name in ("ingest", "results"):
                continue
            assert str(published).startswith("127.0.0.1:"), (name, published)
