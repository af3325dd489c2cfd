"""Least privilege, checked on the IAM policy documents in deploy/iam/.

A small evaluator answers "may this role do this action on this resource?"
(IAM wildcards; an Allow's conditions are ignored, so answers err towards
"allowed" and the must-not checks stay strict; only unconditional Denies count).

Why not a ready-made evaluator (checked with the versions in constraints.txt):
- moto's (`moto.iam.access_control.IAMPolicy`, 5.2.5) evaluates only `StringEquals` and silently
  passes every other operator, so the `ForAnyValue:StringEquals` and `StringLike` conditions these
  policies hold would count as met; it turns an Allow whose condition fails into an explicit Deny;
  a condition key missing from the request passes; and actions match case-sensitively. It would
  answer wrongly where ours is only conservative.
- `parliament` is a linter, not an evaluator: it cannot answer "may this role do X on Y". What it
  has is AWS's own database of actions, resource types and the condition keys each action
  supports, so it is used for what the evaluator here cannot see: a condition that can never
  match (`test_parliament_finds_nothing`). That is how `s3:prefix` on
  `s3:ListBucketMultipartUploads` was found: the action has no such key, so in AWS the Allow never
  applied and listing open uploads (resuming a patient's upload, erasing one) was refused.
No other evaluator installs here offline (AWS's own policy simulator is an online API)."""

from __future__ import annotations

import importlib.resources
import importlib.util
import json
import sys
import types
from fnmatch import fnmatchcase

import pytest

from shared.domain.checkin import artifact_key
from shared.runtime.infra import OPEN_ALERTS_INDEX, PATIENT_ALERTS_INDEX, PATIENT_JOBS_INDEX, UPLOAD_PREFIX
from shared.runtime.topology import PUBLISHES_TO, STAGES, WORK_QUEUES
from shared.settings import CommonSettings
from tests.deploy.support import DEPLOY

REGION, ACCOUNT = "eu-west-1", "123456789012"
SETTINGS = CommonSettings()
PUBLISHES = {stage: set(receivers) for stage, receivers in PUBLISHES_TO.items()}
SQS = f"arn:aws:sqs:{REGION}:{ACCOUNT}:"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/"
JOBS, USERS = TABLE + SETTINGS.jobs_table, TABLE + SETTINGS.users_table
OBJECT = f"arn:aws:s3:::{SETTINGS.bucket}/"
WRITES = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem",
          "dynamodb:PartiQLInsert", "dynamodb:PartiQLUpdate", "dynamodb:PartiQLDelete")
CONSUME = ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility")


KMS_KEY_ID = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


def load(service: str) -> dict:
    text = (DEPLOY / "iam" / f"schizodot-{service}.json").read_text()
    return json.loads(text.replace("${AWS_REGION}", REGION).replace("${AWS_ACCOUNT_ID}", ACCOUNT)
                      .replace("${SCHIZODOT_KMS_KEY_ID}", KMS_KEY_ID))


def _listed(value) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _matches(statement: dict, action: str, resource: str) -> bool:
    return any(fnmatchcase(action.lower(), a.lower()) for a in _listed(statement["Action"])) and any(
        fnmatchcase(resource, r) for r in _listed(statement["Resource"]))


def allowed(policy: dict, action: str, resource: str) -> bool:
    statements = policy["Statement"]
    if any(s["Effect"] == "Deny" and "Condition" not in s and _matches(s, action, resource) for s in statements):
        return False
    return any(s["Effect"] == "Allow" and _matches(s, action, resource) for s in statements)


def conditionally_denied(policy: dict, action: str, resource: str, attribute: str) -> bool:
    return any(
        s["Effect"] == "Deny" and _matches(s, action, resource)
        and attribute in s.get("Condition", {}).get("ForAnyValue:StringEquals", {}).get("dynamodb:Attributes", [])
        for s in policy["Statement"])


@pytest.mark.parametrize("service", STAGES)
def test_documents_are_well_formed_and_name_no_wildcard_grants(service):
    policy = load(service)
    assert policy["Version"] == "2012-10-17"
    sids = [s["Sid"] for s in policy["Statement"]]
    assert len(sids) == len(set(sids))
    for statement in policy["Statement"]:
        assert statement["Effect"] in ("Allow", "Deny") and "NotAction" not in statement
        assert not any(a == "*" or a.endswith(":*") for a in _listed(statement["Action"])), statement["Sid"]
        assert "*" not in _listed(statement["Resource"]), statement["Sid"]


def test_only_the_results_role_writes_patient_history():
    for service in STAGES:
        writes = [a for a in WRITES if allowed(load(service), a, USERS)]
        # results saves each job's item, and deletes a patient's items on erasure (issue 12)
        assert writes == (["dynamodb:PutItem", "dynamodb:DeleteItem"] if service == "results" else []), service


def test_only_the_results_role_may_write_a_jobs_results():
    for service in STAGES:
        policy = load(service)
        if service == "results":
            assert allowed(policy, "dynamodb:UpdateItem", JOBS)
            assert not conditionally_denied(policy, "dynamodb:UpdateItem", JOBS, "results")
        else:
            assert conditionally_denied(policy, "dynamodb:UpdateItem", JOBS, "results"), service
    # Only erasure deletes a job, and only the results role runs erasures (issue 12).
    assert [s for s in STAGES if allowed(load(s), "dynamodb:DeleteItem", JOBS)] == ["results"]
    assert [s for s in STAGES if allowed(load(s), "dynamodb:PutItem", JOBS)] == ["ingest"]


@pytest.mark.parametrize("service", STAGES)
def test_each_role_uses_only_its_own_queues(service):
    policy = load(service)
    for stage in STAGES:
        queue, dead_letters = SQS + SETTINGS.queue_name(stage), SQS + SETTINGS.dead_letter_queue_name(stage)
        own = stage == service
        # An erasure (results) reads through the ingest queue, whose S3 notifications and EHR events name
        # patients, and every dead-letter queue, deleting the erased patient's messages (issue 19, finding 5).
        erases = service == "results" and (stage == "ingest")
        for action in CONSUME:
            assert allowed(policy, action, queue) == (own or erases), (action, stage)
        assert allowed(policy, "sqs:GetQueueAttributes", queue) == own, stage
        for action in CONSUME:  # dead letters are for people to read, and for erasures to remove a patient from
            assert allowed(policy, action, dead_letters) == (service == "results"), (action, stage)
        # Its own DLQ's depth is a metric the worker reports (shared/runtime/worker.py watch_queue_depth).
        assert allowed(policy, "sqs:GetQueueAttributes", dead_letters) == own, stage
        # The ingest API puts EHR events on its own queue (POST /api/v1/events, issue 12).
        sends = stage in PUBLISHES[service] or (service == stage == "ingest")
        assert allowed(policy, "sqs:SendMessage", queue) == sends, stage
        assert allowed(policy, "sqs:SendMessage", dead_letters) == own, stage
        for action in ("sqs:PurgeQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes", "sqs:CreateQueue"):
            assert not allowed(policy, action, queue) and not allowed(policy, action, dead_letters)


@pytest.mark.parametrize("service", STAGES)
def test_each_role_reaches_only_its_own_s3_prefixes(service):
    policy = load(service)
    upload = OBJECT + f"{UPLOAD_PREFIX}patient-001/job-1/20261125T100000Z_checkin.mp4"
    # results reads media for the console's short-lived presigned GETs of the video (issue 13)
    reads_media = service in ("ingest", "audio", "vision", "results")
    assert allowed(policy, "s3:GetObject", upload) == reads_media
    assert allowed(policy, "s3:PutObject", upload) == (service == "ingest")  # presigned PUTs
    for stage in ("audio", "vision", "fusion"):
        artifact = OBJECT + artifact_key("job-1", stage)
        assert allowed(policy, "s3:PutObject", artifact) == (stage == service), stage
        readers = {"audio": {"fusion", "results"}, "vision": {"fusion", "results"}, "fusion": {"results"}}[stage]
        assert allowed(policy, "s3:GetObject", artifact) == (service in readers), stage
    # Only erasure deletes media and artifacts, and only the results role runs erasures (issue 12).
    assert allowed(policy, "s3:DeleteObject", upload) == (service == "results")
    for action in ("s3:PutBucketPolicy", "s3:PutBucketNotification", "s3:DeleteBucket"):
        assert not allowed(policy, action, upload) and not allowed(policy, action, f"arn:aws:s3:::{SETTINGS.bucket}")
    assert not allowed(policy, "s3:GetObject", OBJECT + "elsewhere/secret.txt")


def test_each_role_can_do_what_its_code_does():
    needs = {
        "ingest": [("dynamodb:PutItem", JOBS), ("dynamodb:UpdateItem", JOBS), ("dynamodb:GetItem", JOBS)],
        "audio": [("dynamodb:UpdateItem", JOBS), ("dynamodb:GetItem", JOBS)],
        "vision": [("dynamodb:UpdateItem", JOBS), ("dynamodb:GetItem", JOBS)],
        "fusion": [("dynamodb:UpdateItem", JOBS), ("dynamodb:GetItem", JOBS), ("dynamodb:Query", USERS)],
        "results": [("dynamodb:UpdateItem", JOBS), ("dynamodb:GetItem", JOBS), ("dynamodb:Scan", JOBS),
                    ("dynamodb:Query", f"{JOBS}/index/{PATIENT_JOBS_INDEX}"), ("dynamodb:PutItem", USERS),
                    ("dynamodb:Query", USERS)],
    }
    for service, pairs in needs.items():
        policy = load(service)
        queue = SQS + SETTINGS.queue_name(service)
        pairs = pairs + [(a, queue) for a in CONSUME + ("sqs:GetQueueUrl", "sqs:GetQueueAttributes")]
        pairs += [(a, SQS + SETTINGS.dead_letter_queue_name(service))
                  for a in ("sqs:SendMessage", "sqs:GetQueueUrl", "sqs:GetQueueAttributes")]
        pairs += [("sqs:GetQueueUrl", SQS + SETTINGS.queue_name(s)) for s in PUBLISHES[service]]
        missing = [pair for pair in pairs if not allowed(policy, *pair)]
        assert missing == [], service


@pytest.mark.parametrize("queue", sorted(WORK_QUEUES))
def test_work_queues_are_consumed_only_by_their_service(queue):
    owner = WORK_QUEUES[queue]
    url, dead_letters = SQS + SETTINGS.queue_name(queue), SQS + SETTINGS.dead_letter_queue_name(queue)
    for service in STAGES:
        policy = load(service)
        for action in CONSUME + ("sqs:SendMessage",):
            assert allowed(policy, action, url) == (service == owner), (service, action)
        assert allowed(policy, "sqs:SendMessage", dead_letters) == (service == owner), service
        for action in CONSUME:  # dead letters are for people to read and redrive
            assert not allowed(policy, action, dead_letters), (service, action)


def test_only_the_results_role_erases_queued_messages_and_only_from_the_queues_that_hold_patients():
    policy = load("results")
    holding = [SQS + SETTINGS.queue_name("ingest")] + [SQS + SETTINGS.dead_letter_queue_name(s) for s in STAGES]
    for queue in holding:
        for action in CONSUME + ("sqs:GetQueueUrl",):
            assert allowed(policy, action, queue), (action, queue)
        assert not allowed(policy, "sqs:SendMessage", queue) or queue.endswith("results-dlq"), queue
        assert not allowed(policy, "sqs:PurgeQueue", queue)  # one patient's messages, never the whole queue
    for stage in ("audio", "vision", "fusion"):  # their messages carry job ids only
        assert not allowed(policy, "sqs:ReceiveMessage", SQS + SETTINGS.queue_name(stage)), stage


def test_only_the_results_role_keeps_alerts_and_the_clinics_patients():
    alerts, patients = TABLE + SETTINGS.alerts_table, TABLE + SETTINGS.clinic_patients_table
    for service in STAGES:
        policy = load(service)
        for table in (alerts, patients):
            for action in ("dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem", "dynamodb:Query"):
                assert allowed(policy, action, table) == (service == "results"), (service, table, action)
        assert allowed(policy, "dynamodb:Query", f"{alerts}/index/{OPEN_ALERTS_INDEX}") == (service == "results")
        assert allowed(policy, "dynamodb:Query", f"{alerts}/index/{PATIENT_ALERTS_INDEX}") == (service == "results")
        assert allowed(policy, "dynamodb:PutItem", alerts) == (service == "results")
        assert allowed(policy, "dynamodb:Scan", patients) == (service == "results")  # the no-check-in sweep
        topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:schizodot-alerts-clinic-north"
        assert allowed(policy, "sns:Publish", topic) == (service == "results")
        assert not allowed(policy, "sns:Publish", f"arn:aws:sns:{REGION}:{ACCOUNT}:someone-elses-topic")


def test_the_patient_page_uploads_in_parts_under_uploads_only():
    policy = load("ingest")
    upload = OBJECT + f"{UPLOAD_PREFIX}clinic-a.patient-001/job-1/20261125T100000Z_checkin-recording"
    for action in ("s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"):
        assert allowed(policy, action, upload), action
        assert not allowed(policy, action, OBJECT + artifact_key("job-1", "vision")), action
    assert allowed(policy, "s3:ListBucketMultipartUploads", f"arn:aws:s3:::{SETTINGS.bucket}")
    for service in STAGES:
        if service not in ("ingest", "results"):  # results aborts a patient's unfinished uploads on erasure
            assert not allowed(load(service), "s3:AbortMultipartUpload", upload), service


def _parliament():
    """parliament 1.6.4 imports pkg_resources, only to find its own data files; setuptools >= 81
    no longer ships it, so those two lookups are answered from importlib.resources instead."""
    if "pkg_resources" not in sys.modules and importlib.util.find_spec("pkg_resources") is None:
        shim = types.ModuleType("pkg_resources")
        shim.resource_filename = lambda package, name: str(importlib.resources.files(package) / name)
        sys.modules["pkg_resources"] = shim
    import parliament

    return parliament


@pytest.mark.parametrize("service", STAGES)
def test_parliament_finds_nothing(service):
    """Every action exists, fits its resources, and every condition key is one the action supports
    (a key the request never carries makes an Allow's condition false in AWS: a grant that never works)."""
    findings = _parliament().analyze_policy_string(json.dumps(load(service))).findings
    assert [(f.issue, f.detail) for f in findings] == []


def test_only_the_results_role_keeps_the_consoles_sessions():
    from shared.runtime.infra import SESSIONS_BY_PERSON_INDEX, console_sessions_table_definition

    sessions = TABLE + SETTINGS.console_sessions_table
    assert console_sessions_table_definition(SETTINGS.console_sessions_table)["TableName"] == "SchizodotConsoleSessions"
    for service in STAGES:
        policy = load(service)
        # sign-in, idle/absolute expiry, logout and "end all sessions of a person" (issue 23)
        for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
            assert allowed(policy, action, sessions) == (service == "results"), (service, action)
        assert allowed(policy, "dynamodb:Query", f"{sessions}/index/{SESSIONS_BY_PERSON_INDEX}") == (
            service == "results")
        assert not allowed(policy, "dynamodb:Scan", sessions)
