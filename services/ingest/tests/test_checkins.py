"""The one check-in command (services/ingest/checkins.py): what each way in makes of it."""

from __future__ import annotations

import asyncio

from services.ingest.checkins import NewCheckin, create_checkin
from shared.domain.checkin import job_id_from_upload_key
from shared.fakes import InMemoryJobs

JOB = "job-" + "a" * 32


def test_an_upload_checkin_waits_under_its_own_upload_key_and_an_ehr_one_keeps_its_media():
    app = NewCheckin(JOB, "clinic-a", "patient-001", "c.mp4", "video/mp4", "api",
                     created_at="2026-12-01T10:00:00Z").job()
    assert app.patient_id == "clinic-a.patient-001" and app.clinic_id == "clinic-a"
    assert app.s3_key == f"uploads/clinic-a.patient-001/{JOB}/20261201T100000Z_c.mp4"
    assert job_id_from_upload_key(app.s3_key) == JOB  # S3's notification finds the job again
    assert (app.status, app.message, app.pipeline.source) == ("queued", "Waiting for the upload", "api")
    link = NewCheckin(JOB, "clinic-a", "patient-001", "checkin-recording", "video/webm", "patient_link").job()
    assert link.message == "Waiting for the patient's recording" and link.s3_key.startswith("uploads/clinic-a.")
    ehr = NewCheckin(JOB, "clinic-a", "patient-001", "a.mp4", "video/mp4", "event",
                     s3_key="incoming/clinic-a/a.mp4").job()
    assert ehr.s3_key == "incoming/clinic-a/a.mp4" and ehr.message == "Check-in received from upstream system"
    rejected = NewCheckin(JOB, "clinic-a", "patient-001", "", "", "event", s3_key="").job(
        message="Check-in event rejected")
    assert rejected.s3_key == "" and rejected.message == "Check-in event rejected"


def test_creating_the_same_checkin_twice_makes_one_job():
    jobs = InMemoryJobs()
    command = NewCheckin(JOB, "clinic-a", "patient-001", "c.mp4", "video/mp4", "api")

    async def scenario():
        return await create_checkin(command, jobs), await create_checkin(command, jobs)

    (first, created), (_, again) = asyncio.run(scenario())
    assert created and not again
    assert asyncio.run(jobs.get(JOB)) == first
