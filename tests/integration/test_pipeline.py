"""A check-in through the whole stack: API upload, EHR event, skips, duplicates, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import httpx
import pytest

from schizodot import samples
from schizodot.dev_identity import DEV_CLINIC
from shared.domain.job import Job
from shared.runtime.events import CHECKIN_SUBMITTED

pytestmark = pytest.mark.slow

SEED_RESULT_KEYS = {"audio_emotion", "facial_emotion", "compliance", "multimodal_fusion", "clinical_summary"}


def _patient() -> str:
    return f"patient-{uuid.uuid4().hex[:8]}"


def test_uploaded_checkin_completes_with_seed_shaped_results(running_stack, checkin_clip):
    patient = _patient()
    progress: list[int] = []
    job_id = running_stack.submit(checkin_clip, patient)
    job = running_stack.wait_for_job(job_id, progress_log=progress)

    assert job["status"] == "completed", job.get("error")
    assert job["progress"] == 100
    assert progress == sorted(progress), "progress went backwards"
    assert all(p < 100 for p in progress[:-1] if p != 100) and progress[-1] == 100
    for attribute in ("created_at", "updated_at", "started_at", "completed_at", "s3_key", "filename", "content_type"):
        assert job[attribute], attribute
    assert job["s3_key"].startswith(f"uploads/{running_stack.stored_key(patient)}/{job_id}/")
    assert job["patient_id"] == running_stack.stored_key(patient)  # the key: where the job's clinic is stored
    assert "clinic_id" not in job["metadata"]  # not stored again beside it (the APIs still show it)
    assert set(job["results"]) >= {"emotion_summary", "compliance_score", "risk_level"}
    assert job.get("error") is None

    [item] = running_stack.user_items(patient)
    assert item["job_id"] == job_id and item["user_id"] == running_stack.stored_key(patient)
    assert item["status"] == "completed" and "clinic_id" not in item  # the clinic is stored in the key alone
    assert item["analysis_type"] == "multimodal"
    assert item["timestamp"] == item["analyzed_at"]
    assert 0 < item["processing_time_seconds"] < 120
    results = item["results"]
    assert SEED_RESULT_KEYS <= set(results)
    face = results["facial_emotion"]
    assert face["face_detected"] is True and face["frame_count"] > 0
    assert face["primary_emotion"] == "happy"  # the astronaut smiles
    voice = results["audio_emotion"]  # no validated speech-emotion model ships: the voice abstains
    assert voice["assessed"] is False and voice["primary_emotion"] is None
    assert voice["reason"] == "no validated speech-emotion model is configured"
    markers = results["vocal_markers"]
    assert markers["speaking_fraction"]["unit"] == "%" and markers["speaking_fraction"]["value"] > 20
    assert markers["pitch_mean"]["assessed"] is True and markers["pitch_mean"]["unit"] == "Hz"
    assert all(m["baseline"]["reason"].startswith("first check-in") for m in markers.values())
    assert results["clinical_summary"]["flags"] == []  # the transcript is off by default
    compliance = results["compliance"]
    assert compliance["face_detected"] is True
    assert compliance["pill_detected"] is None  # not assessed yet, never guessed
    # no pill detector is configured: a fact about the deployment, reported as such (issue 10)
    assert compliance["verification_status"] == "not_assessed" and compliance["assessed"] is False
    assert compliance["pill_detector"]["configured"] is False
    # The frames that show the observed steps are stored next to the job's artifacts.
    evidence = compliance["evidence_frames"]
    assert evidence, "no evidence frame stored"
    for frame in evidence:
        assert frame["key"].startswith(f"artifacts/{job_id}/evidence/")
        stored = running_stack.client("s3").get_object(Bucket=running_stack.settings.bucket, Key=frame["key"])
        assert stored["ContentType"] == "image/jpeg" and stored["Body"].read(3) == b"\xff\xd8\xff"
    fusion = results["multimodal_fusion"]
    # A first check-in with nothing notable and no pill detector configured: no evidence about the
    # patient raises the risk (the missing detector is a fact about the deployment, not the patient).
    assert fusion["adherence"]["status"] == "not_assessed" and fusion["adherence"]["assessed"] is False
    assert fusion["risk_factors"] == [] and fusion["risk_level"] == "low"
    summary = results["clinical_summary"]
    assert summary["generated_by"] == "rule_based" and summary["recommendations"]
    assert job["results"]["risk_level"] == fusion["risk_level"]

    # The same result through the results service's read API, which needs a credential,
    # shows the clinic's own patient id, and is another clinic's "not found".
    url = f"{running_stack.results_api}/api/v1/results/{job_id}"
    served = httpx.get(url, headers=running_stack.auth("dev-clinician"), timeout=10)
    assert served.status_code == 200 and served.json()["job_id"] == job_id and served.json()["user_id"] == patient
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers=running_stack.auth("other-clinician"), timeout=10).status_code == 404


def test_audio_only_and_silent_video_skip_a_modality_and_say_so(running_stack, media_dir):
    audio_only = samples.checkin_video(media_dir / "voice.m4a", seconds=4.0, with_video=False)
    silent = samples.checkin_video(media_dir / "silent.mp4", seconds=3.0, with_audio=False)
    patient = _patient()
    audio_job = running_stack.submit(audio_only, patient, content_type="audio/mp4")
    silent_job = running_stack.submit(silent, patient)

    done = running_stack.wait_for_job(audio_job)
    assert done["status"] == "completed", done.get("error")
    assert Job.from_item(done).pipeline.expected == ["audio"]
    assert "no video track" in Job.from_item(done).pipeline.skipped["vision"]
    done = running_stack.wait_for_job(silent_job)
    assert done["status"] == "completed", done.get("error")
    assert Job.from_item(done).pipeline.expected == ["vision"]

    items = {item["job_id"]: item for item in running_stack.user_items(patient)}
    audio_item = items[audio_job]["results"]
    assert items[audio_job]["analysis_type"] == "audio_only"
    assert audio_item["facial_emotion"]["assessed"] is False
    assert "no video track" in audio_item["facial_emotion"]["reason"]
    assert "vision" in audio_item["multimodal_fusion"]["modalities_not_assessed"]
    assert "not assessed" in audio_item["clinical_summary"]["emotional_state"]
    silent_item = items[silent_job]["results"]
    assert silent_item["audio_emotion"]["assessed"] is False
    assert "no sound track" in silent_item["audio_emotion"]["reason"]


def ehr_event(key: str, patient: str, event_id: str, **data_overrides) -> str:
    """A check-in event as an upstream EHR publishes it (CloudEvents 1.0, structured JSON)."""
    data = {"clinic_id": DEV_CLINIC, "patient_id": patient, "s3_key": key, "content_type": "video/mp4",
            "metadata": {"session_type": "weekly_checkin"}, **data_overrides}
    return json.dumps({
        "specversion": "1.0", "id": event_id, "source": "urn:ehr:test", "type": CHECKIN_SUBMITTED,
        "subject": patient, "time": "2026-11-25T10:00:00Z", "datacontenttype": "application/json", "data": data,
    })


def test_ehr_event_delivered_twice_makes_one_job_and_one_result(running_stack, checkin_clip):
    patient = _patient()
    key = f"incoming/{DEV_CLINIC}/{uuid.uuid4().hex}.mp4"
    running_stack.client("s3").put_object(Bucket=running_stack.settings.bucket, Key=key, Body=checkin_clip.read_bytes())
    body = ehr_event(key, patient, event_id=str(uuid.uuid4()))
    sqs = running_stack.client("sqs")
    ingest = running_stack.queue_url(running_stack.settings.queue_name("ingest"))
    sqs.send_message(QueueUrl=ingest, MessageBody=body)
    sqs.send_message(QueueUrl=ingest, MessageBody=body)  # at-least-once: the same event again

    jobs = []
    deadline = time.monotonic() + 30
    while not jobs and time.monotonic() < deadline:
        jobs = running_stack.client("dynamodb").query(
            TableName=running_stack.settings.jobs_table, IndexName="patient_id-created_at-index",
            KeyConditionExpression="patient_id = :p",
            ExpressionAttributeValues={":p": {"S": running_stack.stored_key(patient)}})["Items"]
        time.sleep(0.2)
    assert len(jobs) == 1
    job_id = jobs[0]["job_id"]["S"]
    progress: list[int] = []
    job = running_stack.wait_for_job(job_id, progress_log=progress)
    assert job["status"] == "completed", job.get("error")
    assert progress == sorted(progress)
    assert job["metadata"]["session_type"] == "weekly_checkin"
    time.sleep(3)  # let any duplicate still in flight finish
    assert len(running_stack.user_items(patient)) == 1
    stages = Job.from_item(running_stack.job(job_id)).pipeline.stages
    assert {s: stages[s].attempts for s in stages} == {s: 1 for s in stages}
    assert running_stack.job(job_id)["progress"] == 100


def test_cli_submit_prints_the_result_and_reads_history(running_stack, checkin_clip):
    patient = _patient()
    env = {**running_stack.env(), "PATH": "/usr/bin:/bin"}
    submitted = subprocess.run(
        [sys.executable, "-m", "schizodot.cli", "submit", str(checkin_clip), "--patient-id", patient, "--json"],
        capture_output=True, text=True, env=env, timeout=240,
    )
    assert submitted.returncode == 0, submitted.stderr
    item = json.loads(submitted.stdout)  # read back through the results API as dev-clinician
    assert item["user_id"] == patient and SEED_RESULT_KEYS <= set(item["results"])
    assert "Analysis completed successfully" in submitted.stderr  # followed the job's messages

    listed = subprocess.run([sys.executable, "-m", "schizodot.cli", "jobs", "--patient-id", patient, "--json"],
                            capture_output=True, text=True, env=env, timeout=60)
    assert listed.returncode == 0 and json.loads(listed.stdout)[0]["job_id"] == item["job_id"]
    history = subprocess.run([sys.executable, "-m", "schizodot.cli", "results", "--patient-id", patient],
                             capture_output=True, text=True, env=env, timeout=60)
    assert history.returncode == 0 and item["job_id"] in history.stdout


def test_cli_exits_non_zero_with_the_jobs_error(running_stack, media_dir):
    """A file that starts like an MP4 but is cut short: the upload is taken, the ingest stage's
    probe fails the job, and the CLI exits 1 with the job's error."""
    bad = samples.bad_inputs(media_dir / "bad")["truncated_data"]
    env = {**running_stack.env(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "schizodot.cli", "submit", str(bad), "--patient-id", _patient()],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "the video is truncated at" in result.stderr


def test_cli_exits_2_when_the_upload_is_refused(running_stack, media_dir):
    """A JPEG named .mp4 is refused by the upload proxy before any job runs: a usage error (2), in words."""
    bad = media_dir / "not-a-video.mp4"
    bad.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00JFIF" + bytes(2000))
    env = {**running_stack.env(), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "schizodot.cli", "submit", str(bad), "--patient-id", _patient()],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert "upload failed (422)" in result.stderr and "not a video/mp4 recording" in result.stderr
