"""The adapters' contract: object storage, the event publisher and the patient
history, run against the in-memory fakes and against S3, SQS and DynamoDB on
moto's server over HTTP, so the fakes the fast tests use cannot drift."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from services.results.stage.writer import ResultsWriter
from shared.aws.clients import AsyncClients
from shared.aws.history import PatientHistory
from shared.aws.storage import MediaUnavailable, Storage
from shared.domain.errors import InputError
from shared.fakes import InMemoryHistory, MemoryStorage, RecordingPublisher
from shared.runtime.events import AnalysisRequested, ModalityAnalysed
from shared.runtime.messaging import Publisher
from shared.runtime.runner import parse_stage_event
from shared.runtime.topology import CARRIES
from shared.runtime.worker import resolve_queues
from tests.conftest import CONTRACT_CASES, fake_or_real


@pytest.fixture(params=CONTRACT_CASES)
def with_storage(request):
    return fake_or_real(request, MemoryStorage, lambda settings, aws: Storage(aws.s3, settings.bucket))


class _UsersTable:
    """SchizodotUsers on DynamoDB: the history the stages read and the results writer."""

    def __init__(self, settings, aws) -> None:
        self._reader = PatientHistory(aws.dynamodb, settings.users_table)
        self._writer = ResultsWriter(aws.dynamodb, settings.users_table)

    def __getattr__(self, name):
        return getattr(self._writer if name == "save" else self._reader, name)


@pytest.fixture(params=CONTRACT_CASES)
def with_history(request):
    return fake_or_real(request, InMemoryHistory, _UsersTable)


def test_documents_and_media_round_trip_and_a_missing_object_says_so(with_storage, tmp_path):
    key = f"artifacts/job-{uuid.uuid4().hex[:12]}/audio.json"

    async def body(storage):
        await storage.put_json(key, {"speech_detected": True, "score": 0.25, "steps": [1, 2]})
        await storage.put_bytes("uploads/p/clip.mp4", b"\x00\x01media", "video/mp4")
        size = await storage.download("uploads/p/clip.mp4", tmp_path / "clip")
        with pytest.raises(MediaUnavailable, match="the media file does not exist: s3://") as missing:
            await storage.download(f"uploads/p/{uuid.uuid4().hex}.mp4", tmp_path / "none")
        with pytest.raises(Exception, match="NoSuchKey"):
            await storage.get_json(f"artifacts/{uuid.uuid4().hex}.json")
        return (await storage.get_json(key), size, await storage.exists(key),
                await storage.exists(f"x/{uuid.uuid4().hex}"), missing.value)

    document, size, there, absent, missing = with_storage(body)
    assert document == {"speech_detected": True, "score": 0.25, "steps": [1, 2]}
    assert size == 7 and (tmp_path / "clip").read_bytes() == b"\x00\x01media"
    assert there is True and absent is False
    assert isinstance(missing, InputError)  # the job fails with it at once


def test_history_is_newest_first_paged_and_written_once(with_history):
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    items = [{"user_id": patient, "timestamp": f"2026-01-0{day}T00:00:00.000000Z", "job_id": f"job-{day:012x}",
              "results": {"score": day / 10}} for day in (1, 2, 3)]

    async def body(history):
        saved = [await history.save(item) for item in items]
        again = await history.save(items[0])  # the very item again: a retried write, or a redelivery
        other = await history.save({**items[0], "job_id": "job-ffffffffffff"})  # the key holds another item
        first, after = await history.page(patient, 2)
        rest, end = await history.page(patient, 2, after)
        return (saved, again, other, await history.latest(patient, 2), first, rest, after, end,
                await history.for_job(patient, "job-000000000002"), await history.for_job(patient, "job-000000000009"))

    saved, again, other, latest, first, rest, after, end, found, missing = with_history(body)
    assert saved == [True, True, True] and again is True and other is False
    assert [i["job_id"] for i in latest] == ["job-000000000003", "job-000000000002"]
    assert [i["job_id"] for i in first] == ["job-000000000003", "job-000000000002"]
    assert [i["job_id"] for i in rest] == ["job-000000000001"] and end is None
    assert after == {"user_id": patient, "timestamp": "2026-01-02T00:00:00.000000Z"}
    assert found == items[1] and missing is None


def test_a_projected_history_read_returns_only_the_attributes_named_and_leaves_out_what_an_item_lacks(with_history):
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    full = {"user_id": patient, "timestamp": "2026-01-02T00:00:00.000000Z", "job_id": "job-000000000002",
            "status": "completed",
            "results": {"compliance": {"verification_status": "non_compliant", "steps": [{"step": "show_pill"}]},
                        "vocal_markers": {"speech_rate": {"assessed": True, "value": 180.5, "unit": "syll/min"}},
                        "transcript": {"text": "a long transcript"}}}
    bare = {"user_id": patient, "timestamp": "2026-01-01T00:00:00.000000Z", "job_id": "job-000000000001",
            "results": {"transcript": {"text": "only this"}}}

    async def body(history):
        await history.save(bare)
        await history.save(full)
        return await history.latest_projected(
            patient, ("job_id", "timestamp", "status", "results.vocal_markers", "results.compliance.verification_status"),
            limit=5)

    assert with_history(body) == [
        {"job_id": "job-000000000002", "timestamp": "2026-01-02T00:00:00.000000Z", "status": "completed",
         "results": {"vocal_markers": full["results"]["vocal_markers"],
                     "compliance": {"verification_status": "non_compliant"}}},
        {"job_id": "job-000000000001", "timestamp": "2026-01-01T00:00:00.000000Z"},  # none of its results named
    ]


def test_the_newest_results_are_read_whole_past_dynamodbs_one_megabyte_page(with_history):
    """DynamoDB ends a Query's page at 1 MB of the items it read, whole items even under a projection:
    five results of 300 KB take two pages, and the readers (fusion's baseline, the alert rules) get all
    five they asked for, not the first page's three; the API's pages of four hold four, then the last two."""
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    items = [{"user_id": patient, "timestamp": f"2026-01-0{day}T00:00:00.000000Z", "job_id": f"job-{day:012x}",
              "results": {"transcript": {"text": "x" * 300_000}, "compliance": {"verification_status": "compliant"}}}
             for day in range(1, 7)]

    async def body(history):
        for item in items:
            await history.save(item)
        first, after = await history.page(patient, 4)
        rest, end = await history.page(patient, 4, after)
        return (await history.latest(patient, 5),
                await history.latest_projected(patient, ("job_id", "results.compliance.verification_status"), 5),
                [i["job_id"] for i in first + rest], end)

    whole, projected, paged, end = with_history(body)
    newest = [f"job-{day:012x}" for day in range(6, 1, -1)]
    assert paged == [f"job-{day:012x}" for day in range(6, 0, -1)] and end is None  # the API's pages: all six
    assert [i["job_id"] for i in whole] == newest and whole[0] == items[5]
    assert projected == [{"job_id": job, "results": {"compliance": {"verification_status": "compliant"}}}
                         for job in newest]


@pytest.fixture(params=CONTRACT_CASES)
def with_publisher(request):
    """(publisher, read back what reached a stage's queue, as that stage parses it)."""
    if request.param == "memory":
        publisher = RecordingPublisher()

        async def sent_to(stage):
            return publisher.to(stage)

        return lambda body: asyncio.run(body(publisher, sent_to))
    settings = request.getfixturevalue("aws_server")

    async def on_sqs(body):
        async with AsyncClients(settings) as aws:
            queues, _ = await resolve_queues(aws.sqs, settings, "ingest")
            queues.update((await resolve_queues(aws.sqs, settings, "audio"))[0])

            async def sent_to(stage):
                received = []
                while True:
                    response = await aws.sqs.receive_message(QueueUrl=queues[stage], MaxNumberOfMessages=10,
                                                             WaitTimeSeconds=1)
                    if not response.get("Messages"):
                        return received
                    for message in response["Messages"]:
                        await aws.sqs.delete_message(QueueUrl=queues[stage], ReceiptHandle=message["ReceiptHandle"])
                        received += [i.event for i in parse_stage_event(CARRIES[stage])(message["Body"])]

            return await body(Publisher(aws.sqs, queues, "urn:schizodot:test"), sent_to)

    return lambda body: asyncio.run(on_sqs(body))


def test_what_is_published_reaches_the_stage_as_the_event_it_reads(with_publisher):
    job_id = f"job-{uuid.uuid4().hex[:12]}"
    request = AnalysisRequested(job_id=job_id)
    notice = ModalityAnalysed(job_id=job_id, modality="audio")

    async def body(publisher, sent_to):
        ids = [await publisher.publish("vision", request), await publisher.publish("fusion", notice)]
        return ids, await sent_to("vision"), await sent_to("fusion")

    ids, vision, fusion = with_publisher(body)
    assert all(ids) and len(set(ids)) == 2
    assert [e for e in vision if e.job_id == job_id] == [request]
    assert [e for e in fusion if e.job_id == job_id] == [notice]
