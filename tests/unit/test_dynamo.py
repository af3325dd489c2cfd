"""A conditional write whose retry is refused, decided on the item DynamoDB returns
with the refusal (ReturnValuesOnConditionCheckFailure=ALL_OLD), without a server."""

from __future__ import annotations

import asyncio

from botocore.exceptions import ClientError

from shared.aws.dynamo import from_item, put_if_absent, to_item
from shared.aws.jobs import JobsRepository


class AppliedThenRefused:
    """A table of one item: the first write is applied, every later one is refused
    as DynamoDB refuses a retry that meets its own first attempt."""

    def __init__(self, apply) -> None:
        self._apply = apply  # request -> the item after the write
        self.item: dict | None = None

    async def _write(self, **request):
        if self.item is None:
            self.item = self._apply(request)
            return {}
        raise ClientError({"Error": {"Code": "ConditionalCheckFailedException", "Message": "refused"},
                           "Item": self.item}, "Write")

    put_item = update_item = _write


def test_a_put_refused_because_it_landed_already_counts_as_done():
    table = AppliedThenRefused(lambda request: request["Item"])
    item = {"user_id": "patient-001", "timestamp": "t", "results": {"score": 0.5}}

    async def body():
        return [await put_if_absent(table, "T", item, "user_id") for _ in range(2)]

    assert asyncio.run(body()) == [True, True]
    assert from_item(table.item) == item
    assert asyncio.run(put_if_absent(table, "T", {**item, "results": {}}, "user_id")) is False  # another item


def test_a_failed_job_whose_retry_is_refused_counts_as_failed_once():
    def failed_item(request):
        values = from_item(request["ExpressionAttributeValues"])
        return to_item({"job_id": "job-000000000001", "patient_id": "p-1", "status": values[":failed"],
                        "s3_key": "k", "created_at": "t", "updated_at": values[":now"], "error": values[":error"],
                        "completed_at": values[":now"], "metadata": {"pipeline": {"stages": {}}}})

    table = AppliedThenRefused(failed_item)
    jobs = JobsRepository(table, "T")
    table.update_item = _retrying(table.update_item)

    async def body():
        return await jobs.fail("job-000000000001", "the file is empty (0 bytes)", "ingest"), \
            await jobs.fail("job-000000000001", "another reason")

    assert asyncio.run(body()) == (True, False)


def _retrying(write):
    async def send_twice(**request):
        await write(**request)
        return await write(**request)

    return send_twice
