"""The check-in's timeline where it enters: the analyze API, EHR events and the ingest stage, on
in-memory adapters with a real signed token and real media (ffmpeg). A bad timeline is a 422 with
the reason and leaves nothing behind; a good one is kept on the job, and ingest flags the steps
past the recording's end. (The patient page sends one too: services/ingest/patient/tests and
tests/browser/test_patient_page.py.)"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid

import pytest
from fastapi.testclient import TestClient

from schizodot.dev_identity import DevIssuer
from services.ingest.api import IngestAccess, create_app
from services.ingest.handlers import INGEST, IngestDeps, parse_ingest_message
from services.ingest.settings import CheckinLimits, UploadPolicy
from shared.domain.checkin import upload_key, utc_now
from shared.domain.job import new_job
from shared.domain.timeline import CheckinTimeline
from shared.fakes import (
    FakeAdapters,
    InMemoryApiKeys,
    InMemoryJobs,
    InMemoryPatientLinks,
    MemoryAuditStore,
    MemoryStorage,
    deliver,
)
from shared.identity.audit import AuditTrail
from shared.identity.auth import Authenticator
from shared.identity.ratelimit import MemoryRateLimiter
from shared.identity.tokens import AuthSettings
from shared.runtime.events import CHECKIN_SUBMITTED

TIMELINE = [{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
            {"step_id": "medication", "kind": "prompt", "shown_at_ms": 900},
            {"step_id": "show_pill", "kind": "dosing", "shown_at_ms": 1500},
            {"step_id": "show_empty", "kind": "dosing", "shown_at_ms": 2600}]

BAD_TIMELINES = [
    ("malformed", [{"step_id": "mood", "kind": "question", "shown_at_ms": 0}], "timeline.0.kind"),
    ("malformed", [{"step_id": "mood", "kind": "prompt"}], "timeline.0.shown_at_ms: Field required"),
    ("malformed", {"mood": 0}, "timeline"),
    ("oversized", [{"step_id": f"s{i}", "kind": "prompt", "shown_at_ms": i} for i in range(61)], "at most 60"),
    ("out of order", [{"step_id": "mood", "kind": "prompt", "shown_at_ms": 5000},
                      {"step_id": "sleep", "kind": "prompt", "shown_at_ms": 4000}], "out of order"),
    ("negative", [{"step_id": "mood", "kind": "prompt", "shown_at_ms": -1}], "greater than or equal to 0"),
]


@pytest.fixture
def api(tmp_path):
    issuer = DevIssuer(tmp_path)
    auth = Authenticator(AuthSettings(**{k.removeprefix("SCHIZODOT_AUTH_").lower(): v
                                         for k, v in issuer.environment().items()}),
                         InMemoryApiKeys(), InMemoryPatientLinks())
    jobs, queued = InMemoryJobs(), []

    async def enqueue(body: str) -> str:
        queued.append(body)
        return f"m-{len(queued)}"

    app = create_app(UploadPolicy(), jobs, MemoryStorage().presigned_post,
                     IngestAccess(auth, AuditTrail(MemoryAuditStore(), "k", "test"), MemoryRateLimiter(),
                                  InMemoryPatientLinks(), CheckinLimits()), enqueue_event=enqueue)
    with TestClient(app) as client:
        yield client, issuer, jobs, queued


def _analyze(client, issuer, **body):
    return client.post("/api/v1/analyze", headers={"Authorization": f"Bearer {issuer.mint('dev-uploader')}"},
                       json={"patient_id": "patient-001", "filename": "c.mp4", "content_type": "video/mp4", **body})


def test_the_analyze_api_keeps_a_timeline_on_the_job_and_works_without_one(api):
    client, issuer, jobs, _ = api
    given = _analyze(client, issuer, timeline=TIMELINE)
    plain = _analyze(client, issuer)
    assert given.status_code == 201 and plain.status_code == 201, (given.text, plain.text)
    job = asyncio.run(jobs.get(given.json()["job_id"]))
    assert job.pipeline.timeline == TIMELINE
    assert job.to_item()["metadata"]["pipeline"]["timeline"] == TIMELINE
    assert asyncio.run(jobs.get(plain.json()["job_id"])).pipeline.timeline is None


@pytest.mark.parametrize("what,timeline,words", BAD_TIMELINES, ids=[case[0] for case in BAD_TIMELINES])
def test_a_bad_timeline_is_refused_with_the_reason_and_creates_nothing(api, what, timeline, words):
    client, issuer, jobs, _ = api
    refused = _analyze(client, issuer, timeline=timeline)
    assert refused.status_code == 422 and words in json.dumps(refused.json()), refused.text
    assert asyncio.run(jobs.list_for_patient("dev-clinic.patient-001")) == []


def _event(**data) -> dict:
    return {"specversion": "1.0", "id": uuid.uuid4().hex, "source": "urn:ehr:test", "type": CHECKIN_SUBMITTED,
            "datacontenttype": "application/json",
            "data": {"clinic_id": "dev-clinic", "patient_id": "patient-001", "s3_key": "incoming/dev-clinic/c.mp4",
                     **data}}


@pytest.mark.parametrize("what,timeline,words", BAD_TIMELINES, ids=[case[0] for case in BAD_TIMELINES])
def test_an_ehr_event_with_a_bad_timeline_is_refused_with_the_reason(api, what, timeline, words):
    client, issuer, _, queued = api
    refused = client.post("/api/v1/events", headers={"Authorization": f"Bearer {issuer.mint('dev-ehr')}"},
                          json=_event(timeline=timeline))
    assert refused.status_code == 422 and words in refused.json()["detail"], refused.text
    assert queued == []


def test_an_ehr_events_timeline_reaches_its_job():
    accepted = client_event = _event(timeline=TIMELINE)
    [inbound] = parse_ingest_message(json.dumps(client_event))
    assert inbound.new_job.pipeline.timeline == TIMELINE and accepted["data"]["timeline"] == TIMELINE


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("timeline-media") / "checkin.mp4"  # 2.0 s
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=10:d=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(path)], check=True, capture_output=True)
    return path


def _ingested(clip, timeline):
    fakes = FakeAdapters()

    async def scenario():
        job_id, created = f"job-{uuid.uuid4().hex[:12]}", utc_now()
        key = upload_key("patient-001", job_id, clip.name, created)
        await fakes.jobs.create(new_job(job_id, patient_id="patient-001", s3_key=key, filename=clip.name,
                                        content_type="video/mp4", created_at=created, message="q", source="api",
                                        timeline=CheckinTimeline.of(timeline)))
        fakes.storage.put_file(key, clip)
        notice = {"Records": [{"s3": {"bucket": {"name": fakes.storage.bucket}, "object": {"key": key}}}]}
        await deliver(fakes.runner(INGEST, IngestDeps(UploadPolicy(), fakes.storage)), json.dumps(notice))
        return await fakes.jobs.get(job_id)

    return asyncio.run(scenario())


def test_ingest_flags_the_steps_past_the_recordings_end_on_the_job(clip):
    job = _ingested(clip, TIMELINE)  # show_empty at 2.6 s of a 2.0 s recording
    assert job.pipeline.stages["ingest"].state == "done" and job.pipeline.timeline == TIMELINE
    assert job.pipeline.timeline_flags == [
        "step 'show_pill' ran past the recording's end: its window is cut at 2.0 s",
        "step 'show_empty' was shown at 2.6 s, after the recording ended (2.0 s): no window"]
    assert job.to_item()["metadata"]["pipeline"]["timeline_flags"] == job.pipeline.timeline_flags


def test_ingest_records_no_flags_for_a_timeline_within_the_recording_or_for_none(clip):
    within = _ingested(clip, TIMELINE[:3])
    assert within.pipeline.timeline_flags == [] and "timeline_flags" in within.to_item()["metadata"]["pipeline"]
    plain = _ingested(clip, None)
    assert plain.pipeline.timeline is None and "timeline_flags" not in plain.to_item()["metadata"]["pipeline"]
