"""The review's conditional write on DynamoDB (the AWS server over HTTP): two reviewers who read the
same revision at once are both kept, in order, the later current; the job's summary follows."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.results.dosing import DosingReview, DosingReviews
from services.results.stage.writer import ResultsWriter
from shared.aws.clients import AsyncClients
from shared.aws.history import PatientHistory
from shared.aws.jobs import JobsRepository
from shared.domain.job import new_job
from shared.fakes import MemoryAuditStore
from shared.identity.audit import AuditTrail
from shared.identity.principal import CredentialKind, Principal, Role, patient_key
from tests.browser.contract_items import history

pytestmark = pytest.mark.server
CLINIC = "clinic-a"


def test_two_reviewers_at_once_on_dynamodb_are_both_kept_in_order(aws_server):
    settings = aws_server
    patient = f"patient-{uuid.uuid4().hex[:6]}"
    [item] = history(patient, CLINIC, 1, statuses=["not_assessed"])
    item = {**item, "user_id": patient_key(CLINIC, patient), "job_id": f"job-{uuid.uuid4().hex[:12]}"}

    def reviewer(name: str) -> Principal:
        return Principal(subject=name, role=Role.CLINICIAN, clinic_id=CLINIC, credential=CredentialKind.BEARER)

    async def scenario():
        async with AsyncClients(settings) as aws:
            writer = ResultsWriter(aws.dynamodb, settings.users_table)
            jobs = JobsRepository(aws.dynamodb, settings.jobs_table)
            assert await writer.save(item)
            job = new_job(item["job_id"], patient_id=item["user_id"], s3_key=item["s3_key"], filename="c.webm",
                          content_type="video/webm", created_at=item["timestamp"], message="q", source="api",
                          clinic_id=CLINIC)
            await jobs.create(job)
            await aws.dynamodb.update_item(
                TableName=settings.jobs_table, Key={"job_id": {"S": job.job_id}},
                UpdateExpression="SET #s = :c, results = :r", ExpressionAttributeNames={"#s": "status"},
                ExpressionAttributeValues={":c": {"S": "completed"}, ":r": {"M": {"risk_level": {"S": "low"}}}})

            class Racing(ResultsWriter):
                reads = 0

                async def get(self, user_id, timestamp):
                    Racing.reads += 1  # only the reviewer who lost the race reads again
                    return await super().get(user_id, timestamp)

                async def replace_compliance(self, *args):
                    await asyncio.sleep(0.05)  # both read the same revision before either writes
                    return await super().replace_compliance(*args)

            reviews = DosingReviews(jobs, PatientHistory(aws.dynamodb, settings.users_table),
                                    Racing(aws.dynamodb, settings.users_table),
                                    AuditTrail(MemoryAuditStore(), "k", "schizodot-results"))
            await asyncio.gather(
                reviews.record(reviewer("dr-a"), item["job_id"], DosingReview(verdict="taken")),
                reviews.record(reviewer("dr-b"), item["job_id"], DosingReview(verdict="not_taken",
                                                                              reason="no_pill_shown")))
            stored = await writer.get(item["user_id"], item["timestamp"])
            return stored, await jobs.get(job.job_id), Racing.reads

    stored, job, reads = asyncio.run(scenario())
    review = stored["results"]["compliance"]["review"]
    assert reads >= 1 and review["revision"] == 2 and len(review["history"]) == 1
    assert {review["by"], review["history"][0]["by"]} == {"dr-a", "dr-b"}
    assert stored["results"]["compliance"]["verification_status"] == {"dr-a": "verified_by_review",
                                                                       "dr-b": "not_taken"}[review["by"]]
    assert job.results["verification_status"] == stored["results"]["compliance"]["verification_status"]
    assert job.results["risk_level"] == "low"  # the rest of the summary kept
