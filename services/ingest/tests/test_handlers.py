"""The ingest stage on in-memory adapters: what its queue carries (uploads, EHR
events, rejected events), checking the media (real files, real ffprobe), the
plan it records and the requests it sends."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest

from services.ingest.handlers import INGEST, IngestDeps, MediaArrived, parse_ingest_message
from services.ingest.settings import UploadPolicy
from shared.aws.storage import MediaUnavailable
from shared.domain.checkin import job_id_for_event, upload_key, utc_now
from shared.domain.errors import InputError, MalformedMessage
from shared.domain.job import new_job
from shared.domain.options import CheckinOptions
from shared.fakes import FakeAdapters, deliver
from shared.runtime.events import CHECKIN_SUBMITTED, AnalysisRequested
from shared.runtime.runner import RejectedEvent


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ingest-media")
    video, voice = folder / "checkin.mp4", folder / "voice.m4a"
    _ffmpeg("-f", "lavfi", "-i", "color=c=gray:s=64x64:r=10:d=2", "-f", "lavfi", "-i", "sine=frequency=220:duration=2",
            "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(video))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=220:duration=2", "-c:a", "aac", str(voice))
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    return {"video": video, "voice": voice, "empty": empty}


def _upload_notice(bucket: str, key: str) -> str:
    return json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": bucket},
                                                                            "object": {"key": key}}}]})


def _ehr_event(event_id: str, **data) -> str:
    data.setdefault("clinic_id", "clinic-a")
    return json.dumps({"specversion": "1.0", "id": event_id, "source": "urn:ehr:test", "type": CHECKIN_SUBMITTED,
                       "datacontenttype": "application/json", "data": data})


async def _uploaded(fakes: FakeAdapters, path, content_type="video/mp4", options=None) -> tuple[str, str]:
    """A job as the API made it, with its media uploaded."""
    job_id, created = f"job-{uuid.uuid4().hex[:12]}", utc_now()
    key = upload_key("patient-001", job_id, path.name, created)
    await fakes.jobs.create(new_job(job_id, patient_id="patient-001", s3_key=key, filename=path.name,
                                    content_type=content_type, created_at=created, message="Waiting for the upload",
                                    source="api", options=options, trace_fields={"trace_id": "a" * 32,
                                                                "trace_context": {"traceparent": "00-" + "a" * 32
                                                                                  + "-" + "b" * 16 + "-01"}}))
    fakes.storage.put_file(key, path)
    return job_id, key


def _runner(fakes: FakeAdapters, **limits):
    return fakes.runner(INGEST, IngestDeps(UploadPolicy(**limits), fakes.storage))


# --- what the queue carries ------------------------------------------------------------------


def test_an_upload_notice_names_the_job_in_its_key_and_continues_the_jobs_trace():
    key = "uploads/patient-001/job-abc123def456/20260101T000000Z_checkin.mp4"
    [inbound] = parse_ingest_message(_upload_notice("media", key.replace("_", "%5F")))
    assert inbound.job_id == "job-abc123def456" and inbound.trace_from_job and inbound.new_job is None
    assert inbound.event == MediaArrived(job_id="job-abc123def456", bucket="media", s3_key=key)
    assert parse_ingest_message(json.dumps({"Event": "s3:TestEvent"})) == []
    with pytest.raises(MalformedMessage, match="was not issued by the analyze API"):
        parse_ingest_message(_upload_notice("media", "uploads/elsewhere.mp4"))
    with pytest.raises(MalformedMessage, match="not JSON"):
        parse_ingest_message("{broken")
    with pytest.raises(MalformedMessage, match="CloudEvents"):
        parse_ingest_message(json.dumps({"patient_id": "patient-001", "s3_key": "x.mp4"}))


def test_an_ehr_event_brings_its_job_and_the_same_event_always_names_the_same_job():
    body = _ehr_event("evt-1", patient_id="patient-001", s3_key="incoming/clinic-a/a.MOV", metadata={"session_type": "weekly"})
    [inbound] = parse_ingest_message(body)
    assert inbound.job_id == job_id_for_event("urn:ehr:test", "evt-1", "clinic-a") == parse_ingest_message(body)[0].job_id
    # Another clinic's EHR using the same source and event id names another job.
    assert job_id_for_event("urn:ehr:test", "evt-1", "clinic-b") != inbound.job_id
    job = inbound.new_job
    assert (job.patient_id, job.clinic_id, job.s3_key, job.filename, job.content_type) == (
        "clinic-a.patient-001", "clinic-a", "incoming/clinic-a/a.MOV", "a.MOV", "video/quicktime")
    assert job.status == "queued" and job.metadata == {"session_type": "weekly"} and job.pipeline.source == "event"
    assert inbound.event.bucket is None  # the media bucket


def test_an_unreadable_event_naming_a_patient_leaves_a_failed_job_and_is_dead_lettered():
    with pytest.raises(RejectedEvent, match="s3_key: Field required") as rejected:
        parse_ingest_message(_ehr_event("evt-2", patient_id="patient-001"))
    assert rejected.value.job.patient_id == "clinic-a.patient-001" and rejected.value.job.clinic_id == "clinic-a"
    assert rejected.value.job.message == "Check-in event rejected"
    with pytest.raises(RejectedEvent, match="does not say what the media is"):
        parse_ingest_message(_ehr_event("evt-3", patient_id="patient-001", s3_key="incoming/clinic-a/a.bin"))
    with pytest.raises(MalformedMessage) as anonymous:
        parse_ingest_message(_ehr_event("evt-4", patient_id="p!", s3_key="incoming/clinic-a/a.mp4"))
    assert not isinstance(anonymous.value, RejectedEvent)


def test_an_ehr_event_may_point_only_at_its_own_clinics_incoming_media():
    for key in ("uploads/clinic-b.patient-001/job-0123456789ab/x.mp4", "incoming/clinic-b/a.mp4",
                "incoming/clinic-a/../clinic-b/a.mp4"):
        with pytest.raises(RejectedEvent, match="s3_key: must be under incoming/clinic-a/"):
            parse_ingest_message(_ehr_event(f"evt-{key}", patient_id="patient-001", s3_key=key))
    with pytest.raises(RejectedEvent, match="bucket: EHR media must be in the media bucket"):
        parse_ingest_message(_ehr_event("evt-b", patient_id="patient-001", s3_key="incoming/clinic-a/a.mp4",
                                        bucket="another-bucket"))
    with pytest.raises(MalformedMessage, match="clinic_id"):  # no clinic: nobody's job
        parse_ingest_message(_ehr_event("evt-c", patient_id="patient-001", s3_key="incoming/a.mp4", clinic_id="A B"))

    fakes = FakeAdapters()

    async def scenario():
        accepted = await _runner(fakes).accept(_delivery(_ehr_event("evt-5", patient_id="patient-001")))
        with pytest.raises(MalformedMessage):
            await accepted.work()
        return await fakes.jobs.get(job_id_for_event("urn:ehr:test", "evt-5", "clinic-a"))

    job = asyncio.run(scenario())
    assert job.status == "failed" and "the check-in event was rejected: invalid event data: s3_key" in job.error


# --- the stage ----------------------------------------------------------------------------------


def test_an_uploaded_video_is_checked_planned_and_sent_to_audio_and_vision(clips):
    fakes = FakeAdapters()
    gets = []
    real_get = fakes.jobs.get

    async def counted_get(job_id):
        gets.append(job_id)
        return await real_get(job_id)

    async def scenario():
        job_id, key = await _uploaded(fakes, clips["video"])
        fakes.jobs.get = counted_get
        accepted = await deliver(_runner(fakes), _upload_notice(fakes.storage.bucket, key))
        fakes.jobs.get = real_get
        return job_id, key, accepted, await fakes.jobs.get(job_id)

    job_id, key, accepted, job = asyncio.run(scenario())
    assert gets == [job_id]  # one read: the trace and the claim both start from it
    assert accepted.trace_origin == "job" and accepted.trace_carrier["traceparent"].startswith("00-" + "a" * 32)
    plan = job.pipeline
    assert plan.expected == ["audio", "vision"] and plan.skipped == {} and plan.bucket == fakes.storage.bucket
    assert plan.weights == {"ingest": 10, "fusion": 10, "audio": 25, "vision": 45}
    assert plan.media["has_video"] and plan.media["has_audio"] and 1.9 < plan.media["duration_seconds"] < 2.2
    ingest = plan.stages["ingest"]
    assert ingest.state == "done" and ingest.outputs.size_bytes == clips["video"].stat().st_size
    assert job.progress == 10 and job.message.startswith("Media checked (2.0 s); analysing audio and vision")
    request = AnalysisRequested(job_id=job_id)
    assert fakes.publisher.sent == [("audio", request), ("vision", request)]


def test_an_audio_only_recording_skips_vision_and_says_why(clips):
    fakes = FakeAdapters()

    async def scenario():
        job_id, key = await _uploaded(fakes, clips["voice"], "audio/mp4")
        await deliver(_runner(fakes), _upload_notice(fakes.storage.bucket, key))
        return await fakes.jobs.get(job_id)

    job = asyncio.run(scenario())
    assert job.pipeline.expected == ["audio"] and job.pipeline.skipped == {"vision": "the recording has no video track"}
    assert [to for to, _ in fakes.publisher.sent] == ["audio"]
    assert job.message.endswith("(vision skipped: the recording has no video track)")


def test_only_the_analyses_the_checkin_asks_for_are_planned(clips):
    fakes = FakeAdapters()

    async def scenario(analyses):
        job_id, key = await _uploaded(fakes, clips["video"], options=CheckinOptions(analyses=analyses))
        fakes.publisher.sent.clear()
        await deliver(_runner(fakes), _upload_notice(fakes.storage.bucket, key))
        return await fakes.jobs.get(job_id), [to for to, _ in fakes.publisher.sent]

    job, sent = asyncio.run(scenario(["vision"]))
    assert job.pipeline.expected == ["vision"] and sent == ["vision"]
    assert job.pipeline.skipped == {"audio": "not requested for this check-in"}
    assert job.pipeline.weights == {"ingest": 10, "fusion": 10, "vision": 70}
    job, sent = asyncio.run(scenario(["audio", "transcript"]))
    assert job.pipeline.expected == ["audio"] and sent == ["audio"]
    assert job.pipeline.options.wants("transcript")  # audio reads it from the job


def test_asking_only_for_a_track_the_recording_lacks_fails_the_checkin_in_words(clips):
    fakes = FakeAdapters()

    async def scenario():
        job_id, key = await _uploaded(fakes, clips["voice"], "audio/mp4", options=CheckinOptions(analyses=["vision"]))
        await deliver(_runner(fakes), _upload_notice(fakes.storage.bucket, key))
        return await fakes.jobs.get(job_id)

    with pytest.raises(InputError, match="audio: not requested for this check-in; vision: the recording has no video track"):
        asyncio.run(scenario())


def test_an_ehr_event_delivered_twice_makes_one_job_and_asks_again_only_what_was_asked(clips):
    fakes = FakeAdapters()
    fakes.storage.put_file("incoming/clinic-a/ehr.mp4", clips["video"])
    body = _ehr_event("evt-6", patient_id="patient-002", s3_key="incoming/clinic-a/ehr.mp4")

    async def scenario():
        runner = _runner(fakes)
        await deliver(runner, body, message_id="m-1")
        await deliver(runner, body, message_id="m-2")  # at-least-once: the same event again
        return await fakes.jobs.list_for_patient("clinic-a.patient-002")

    [job] = asyncio.run(scenario())
    assert job.pipeline.source == "event" and job.pipeline.stages["ingest"].attempts == 1
    sent = [(to, event) for to, event in fakes.publisher.sent]
    # re-announced, not redone; by job id only: no message names the patient's media (issue 19, finding 5)
    assert sent == [("audio", AnalysisRequested(job_id=job.job_id)), ("vision", AnalysisRequested(job_id=job.job_id))] * 2
    assert job.s3_key == "incoming/clinic-a/ehr.mp4"


@pytest.mark.parametrize("case, expected", [
    ("empty", "the file is empty"),
    ("missing", "the media file does not exist"),
    ("too big", "the limit is 0 MB"),
])
def test_media_that_cannot_be_analysed_is_bad_input_in_words(clips, case, expected):
    fakes = FakeAdapters()

    async def scenario():
        job_id, key = await _uploaded(fakes, clips["empty" if case == "empty" else "video"])
        if case == "missing":
            fakes.storage.objects.clear()
        runner = _runner(fakes, max_upload_bytes=1) if case == "too big" else _runner(fakes)
        with pytest.raises(InputError, match=expected) as failure:
            await deliver(runner, _upload_notice(fakes.storage.bucket, key))
        return failure.value

    error = asyncio.run(scenario())
    assert isinstance(error, MediaUnavailable) == (case == "missing")
    assert fakes.publisher.sent == []


def _delivery(body: str):
    from shared.runtime.messaging import Delivery

    return Delivery("m-x", "r-x", body, {}, 1, "schizodot-ingest")
