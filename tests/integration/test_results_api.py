"""Fusion and results workers (real processes, `python -m services.<x>.main`) against
moto's server over HTTP: baseline from the patient's history, the LLM failure
path, the FHIR event to the EHR, and the results API with its authentication."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from fhir.resources.R4B.bundle import Bundle

from schizodot.dev_identity import DEV_CLINIC, DevIssuer
from services.results.ehr.publisher import RESULTS_AVAILABLE
from services.results.stage.writer import ResultsWriter
from shared.aws.clients import AsyncClients, sync_client
from shared.aws.jobs import JobsRepository
from shared.domain.checkin import artifact_key
from shared.domain.job import Job, plan_weights
from shared.domain.markers import measured, parse
from shared.identity.audit import AuditTrail, S3AuditStore
from shared.identity.principal import patient_key
from shared.runtime.events import MODALITY_ANALYSED, ModalityAnalysed, encode_event
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
CLINIC = DEV_CLINIC  # every patient here is dev-clinic's; other-clinic's users must not see them


def key(patient: str) -> str:
    """How dev-clinic's patient is stored."""
    return patient_key(CLINIC, patient)


def _now(offset_days: float = 0) -> str:
    return (datetime.now(timezone.utc) + timedelta(days=offset_days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _patient() -> str:
    return f"patient-{uuid.uuid4().hex[:8]}"


def _job_id() -> str:
    return f"job-{uuid.uuid4().hex[:12]}"


class Workers:
    def __init__(self, settings, ehr_queue_url: str, api_port: int, logs: Path, issuer: DevIssuer) -> None:
        self.issuer = issuer
        self.settings = settings
        self.ehr_queue_url = ehr_queue_url
        self.api = f"http://127.0.0.1:{api_port}"
        self.logs = logs

    def http(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.api, timeout=10, headers=headers)

    def authed(self, user: str = "dev-clinician") -> httpx.Client:
        return self.http(Authorization=f"Bearer {self.issuer.mint(user)}")

    def job(self, job_id: str) -> dict | None:
        async def body(aws):
            return await JobsRepository(aws.dynamodb, self.settings.jobs_table).get(job_id)
        return asyncio.run(_with_aws(self.settings, body))

    def wait_for_job(self, job_id: str, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job and job.status in ("completed", "failed"):
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish: {self.job(job_id)}\n{self.log_tail()}")

    def log_tail(self) -> str:
        return "\n".join(f"--- {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-15:])
                         for p in sorted(self.logs.glob("*.log")))


async def _with_aws(settings, body):
    async with AsyncClients(settings) as aws:
        return await body(aws)


ISSUER_DIR = Path(tempfile.mkdtemp(prefix="results-api-issuer-"))


def worker_env(settings, api_port: int, ehr_queue_url: str) -> dict[str, str]:
    return {
        **DevIssuer(ISSUER_DIR).environment(), "SCHIZODOT_PSEUDONYM_KEY": "results-api-tests",
        **os.environ,
        "AWS_ENDPOINT_URL": settings.aws_endpoint_url, "AWS_REGION": settings.aws_region,
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "SCHIZODOT_WAIT_TIME_SECONDS": "1", "PYTHONUNBUFFERED": "1",
        # the sweeper must leave other tests' deliberately old jobs alone
        "RESULTS_STUCK_AFTER_SECONDS": str(30 * 24 * 3600), "RESULTS_SWEEP_INTERVAL_SECONDS": "3600",
        "RESULTS_API_PORT": str(api_port), "RESULTS_EHR_QUEUE_URL": ehr_queue_url,
        # the LLM summary is on; moto's server cannot run Bedrock's Converse, so every call fails
        "FUSION_LLM_ENABLED": "true", "FUSION_LLM_MAX_ATTEMPTS": "1",
    }


@pytest.fixture(scope="module")
def workers(aws_server, tmp_path_factory):
    settings = aws_server
    sqs = sync_client(settings, "sqs")
    ehr_queue_url = sqs.create_queue(QueueName=f"ehr-inbox-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    api_port = free_port()
    logs = tmp_path_factory.mktemp("worker-logs")
    env = worker_env(settings, api_port, ehr_queue_url)
    processes = []
    for service in ("fusion", "results"):
        with open(logs / f"{service}.log", "wb") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", f"services.{service}.main"], cwd=REPO,
                                              env=env, stdout=log, stderr=subprocess.STDOUT))
    running = Workers(settings, ehr_queue_url, api_port, logs, DevIssuer(ISSUER_DIR))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{running.api}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                raise AssertionError("the workers did not start:\n" + running.log_tail())
            time.sleep(0.2)
        yield running
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


# --- hand-built stage outputs and history -----------------------------------------------


def _audio(speech_rate: float = 210.0) -> dict:
    """An audio artifact in the contract's shape (CONTRACT-10): no speech emotion, markers with units."""
    values = {"speaking_fraction": ("%", 62.0), "pause_rate": ("per min", 9.0), "speech_rate": ("syllables per min",
              speech_rate), "pitch_variability": ("semitones", 2.5)}
    return {"audio_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                              "method": None, "validation": None,
                              "reason": "no validated speech-emotion model is configured"},
            "vocal_markers": {name: measured(value, unit, f"method of {name}") for name, (unit, value) in values.items()},
            "speech_detected": True, "duration_seconds": 8.0}


def _vision(activity: float, status: str) -> dict:
    """A vision artifact in the contract's shape, with a pill detector configured."""
    return {"facial_emotion": {"primary_emotion": "neutral", "confidence": 0.7, "face_detected": True,
                               "frame_count": 40, "method": "fer + face-api", "assessed": True,
                               "validation": {"balanced_recall": 0.57, "dataset": "FER2013", "n": 3589},
                               "all_emotions": [{"emotion": "neutral", "confidence": 0.7},
                                                {"emotion": "happy", "confidence": 0.3}]},
            "video_markers": {"facial_expressivity": measured(activity, "blendshape activity (0-1)", "blendshapes"),
                              "face_in_view_share": measured(95.0, "%", "landmarker")},
            "compliance": {"pill_detected": False if status == "non_compliant" else None, "hand_detected": True,
                           "face_detected": True, "compliance_score": 0.1 if status == "non_compliant" else None,
                           "confidence": 0.8, "verification_status": status, "assessed": True,
                           "reason": "the hand never reached the mouth" if status == "non_compliant"
                           else "the pill was not seen on the tongue",
                           "pill_detector": {"configured": True, "model": "pills.onnx",
                                             "validated_on_real_pills": False,
                                             "note": "synthetic-trained, not validated on real pills"}}}


def _history_item(patient: str, days_ago: float, activity: float, status: str) -> dict:
    stamp = _now(-days_ago)
    audio, vision = _audio(), _vision(activity, status)
    return {"user_id": key(patient), "clinic_id": CLINIC, "timestamp": stamp, "job_id": _job_id(),
            "s3_key": f"uploads/{key(patient)}/x.mp4",
            "analysis_type": "multimodal", "analyzed_at": stamp, "processing_time_seconds": 3.0,
            "status": "completed",
            "results": {"audio_emotion": audio["audio_emotion"], "facial_emotion": vision["facial_emotion"],
                        "compliance": vision["compliance"], "vocal_markers": audio["vocal_markers"],
                        "video_markers": vision["video_markers"],
                        "multimodal_fusion": {"risk_level": "high" if status == "non_compliant" else "low"},
                        "clinical_summary": {"generated_by": "rule_based"}}}


def seed_history(settings, items: list[dict]) -> None:
    async def body(aws):
        writer = ResultsWriter(aws.dynamodb, settings.users_table)
        for item in items:
            assert await writer.save(item)
    asyncio.run(_with_aws(settings, body))


def submit_analysed_checkin(settings, patient: str, audio: dict | None, vision: dict | None,
                            skipped: dict[str, str] | None = None) -> str:
    """A job whose modalities are analysed (artifacts in S3), announced to fusion as the vision stage does."""
    job_id = _job_id()
    documents = {m: d for m, d in (("audio", audio), ("vision", vision)) if d is not None}
    created = _now()

    async def body(aws):
        for modality, document in documents.items():
            stored = {"job_id": job_id, "modality": modality, "analysed_at": created, **document}  # as the stage writes it
            await aws.s3.put_object(Bucket=settings.bucket, Key=artifact_key(job_id, modality),
                                    Body=json.dumps(stored).encode())
        await JobsRepository(aws.dynamodb, settings.jobs_table).create(Job.from_item({
            "job_id": job_id, "patient_id": key(patient), "status": "processing",
            "s3_key": f"uploads/{key(patient)}/{job_id}/20260101T000000Z_checkin.mp4", "filename": "checkin.mp4",
            "content_type": "video/mp4" if vision else "audio/mp4", "created_at": created, "updated_at": created,
            "started_at": created, "progress": 70, "message": "analysed",
            "metadata": {"clinic_id": CLINIC, "pipeline": {
                "source": "api", "expected": list(documents), "skipped": skipped or {},
                "weights": plan_weights(list(documents)),
                "stages": {m: {"state": "done", "message_id": f"m-{m}", "credited": 0, "attempts": 1,
                               "outputs": {"artifact_key": artifact_key(job_id, m)}} for m in documents}}},
        }))
        fusion_queue = (await aws.sqs.get_queue_url(QueueName=settings.queue_name("fusion")))["QueueUrl"]
        last = list(documents)[-1]
        await aws.sqs.send_message(QueueUrl=fusion_queue, MessageBody=encode_event(
            MODALITY_ANALYSED, f"urn:schizodot:{last}", job_id,
            ModalityAnalysed(job_id=job_id, modality=last)))
    asyncio.run(_with_aws(settings, body))
    return job_id


def receive_ehr_events(workers: Workers, job_id: str, timeout: float = 30) -> list[dict]:
    sqs = sync_client(workers.settings, "sqs")
    found: list[dict] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not found:
        for message in sqs.receive_message(QueueUrl=workers.ehr_queue_url, MaxNumberOfMessages=10,
                                           WaitTimeSeconds=1, MessageAttributeNames=["All"]).get("Messages", []):
            event = json.loads(message["Body"])
            if event["subject"] == job_id:
                found.append(event)
                sqs.delete_message(QueueUrl=workers.ehr_queue_url, ReceiptHandle=message["ReceiptHandle"])
    return found


# --- the tests -----------------------------------------------------------------------------


def test_checkin_is_compared_with_the_patients_history_and_sent_to_the_ehr_as_fhir(workers):
    settings = workers.settings
    patient = _patient()
    # Two earlier check-ins with the medication not taken, then three ordinary ones, all expressive.
    seed_history(settings, [
        _history_item(patient, 1, 0.10, "non_compliant"),
        _history_item(patient, 2, 0.09, "non_compliant"),
        *(_history_item(patient, d, 0.11, "inconclusive") for d in (3, 4, 5)),
    ])
    job_id = submit_analysed_checkin(settings, patient, _audio(), _vision(0.04, "non_compliant"))
    job = workers.wait_for_job(job_id)
    assert job.status == "completed", job.error
    assert job.results["risk_level"] == "high"

    with workers.authed() as http:
        item = http.get(f"/api/v1/results/{job_id}").json()
    fusion = item["results"]["multimodal_fusion"]
    baseline = fusion["baseline"]
    assert baseline["available"] is True and baseline["checkins_compared"] == 5
    assert baseline["missed_medication_streak"] == 3
    assert {"repeated_missed_medication", "expressivity_below_baseline"} <= set(fusion["risk_factors"])
    expressivity = parse(item["results"]["video_markers"]["facial_expressivity"])
    assert expressivity.baseline.available and expressivity.baseline.checkins == 5
    assert expressivity.baseline.notable and expressivity.baseline.direction == "lower"
    rate = parse(item["results"]["vocal_markers"]["speech_rate"])
    assert rate.unit == "syllables per min" and rate.baseline.available and not rate.baseline.notable
    summary = item["results"]["clinical_summary"]
    assert "medication seen not taken in 3 check-ins in a row" in summary["change_from_baseline"]
    # The LLM summary was enabled and failed: the rule-based summary stands and says why.
    assert summary["generated_by"] == "rule_based"
    assert "Converse" in summary["llm_error"] and summary["llm_model_id"]
    assert summary["recommendations"][0] == "Contact the patient within 24 hours"

    [event] = receive_ehr_events(workers, job_id)
    assert event["type"] == RESULTS_AVAILABLE and event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/fhir+json"
    bundle = Bundle.model_validate(event["data"])  # validated by the FHIR library
    observations = {e.resource.code.coding[0].code: e.resource for e in bundle.entry
                    if e.resource.get_resource_type() == "Observation"}
    assert set(observations) == {"vocal-markers", "video-markers", "emotional-state", "medication-intake",
                                 "risk-level"}
    assert observations["risk-level"].valueCodeableConcept.coding[0].code == "high"
    assert observations["medication-intake"].valueCodeableConcept.coding[0].code == "non_compliant"
    assert all(o.subject.reference == f"Patient/{patient}" and o.status == "final" for o in observations.values())
    risk_factors = {c.code.coding[0].code for c in observations["risk-level"].component}
    assert "repeated_missed_medication" in risk_factors


def test_first_audio_only_checkin_has_no_baseline_and_names_the_missing_face(workers):
    settings = workers.settings
    patient = _patient()
    job_id = submit_analysed_checkin(settings, patient, _audio(), None,
                                     skipped={"vision": "the recording has no video track"})
    assert workers.wait_for_job(job_id).status == "completed"
    with workers.authed() as http:
        item = http.get(f"/api/v1/results/{job_id}").json()
    fusion = item["results"]["multimodal_fusion"]
    assert fusion["baseline"]["available"] is False and "first check-in" in fusion["baseline"]["reason"]
    assert fusion["modalities_not_assessed"] == {"vision": "the recording has no video track"}
    assert item["results"]["facial_emotion"]["assessed"] is False
    summary = item["results"]["clinical_summary"]
    assert summary["change_from_baseline"] == "First check-in: no baseline yet to compare with"
    assert "not assessed: vision (the recording has no video track)" in summary["emotional_state"]
    assert parse(item["results"]["vocal_markers"]["speech_rate"]).baseline.reason.startswith("first check-in")
    assert item["results"]["compliance"]["verification_status"] == "not_assessed"
    assert summary["medication_adherence"] == "Not assessed - the check-in has no video"
    assert fusion["risk_level"] == "low"  # a first check-in with nothing notable in it
    [event] = receive_ehr_events(workers, job_id)
    bundle = Bundle.model_validate(event["data"])
    observations = {e.resource.code.coding[0].code for e in bundle.entry
                    if e.resource.get_resource_type() == "Observation"}
    assert observations == {"vocal-markers", "risk-level"}  # nothing is said about what was not assessed


@pytest.mark.parametrize("headers", [
    {}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}, {"Authorization": "Bearer wrong"},
    {"Authorization": "Basic ZGV2OmRldg=="}, {"Authorization": "Bearer sdk_0123456789abcdef_" + "k" * 43},
])
def test_unauthenticated_calls_get_401_and_learn_nothing(workers, headers):
    paths = ["/api/v1/jobs/job-000000000000", "/api/v1/jobs/not-a-job", "/api/v1/patients/p!/jobs?limit=0",
             "/api/v1/patients/patient-001/results?next_token=garbage", "/api/v1/results/job-000000000000",
             "/api/v1/nothing-here"]
    with workers.http(**headers) as http:
        for path in paths:
            response = http.get(path)
            assert response.status_code == 401, path
            assert response.json() == {"detail": "authentication required"}
            assert response.headers["www-authenticate"] == "Bearer"


def test_health_and_openapi_docs_are_open(workers):
    with workers.http() as http:
        assert http.get("/health").json() == {"status": "ok"}
        spec = http.get("/openapi.json").json()
        assert "/api/v1/patients/{patient_id}/results" in spec["paths"]
        assert {"APIKeyHeader", "HTTPBearer"} <= set(spec["components"]["securitySchemes"])
        assert http.get("/docs").status_code == 200


def test_job_status_detail_and_errors(workers):
    settings = workers.settings
    patient = _patient()
    job_id = submit_analysed_checkin(settings, patient, _audio(), _vision(0.08, "inconclusive"))
    workers.wait_for_job(job_id)
    with workers.authed("dev-ehr") as http:  # an EHR integration reads its clinic's jobs too
        status = http.get(f"/api/v1/jobs/{job_id}").json()
        assert status["status"] == "completed" and status["progress"] == 100
        assert status["patient_id"] == patient and status["modalities"] == ["audio", "vision"]
        detail = http.get(f"/api/v1/jobs/{job_id}/detail").json()
        assert Job.from_item(detail["job"]).pipeline.stages["results"].state == "done"
        assert detail["result"]["job_id"] == job_id
        missing = http.get("/api/v1/jobs/job-000000000000")
        assert missing.status_code == 404 and missing.json()["detail"] == "no job job-000000000000"
        bad = http.get("/api/v1/jobs/job-123")
        assert bad.status_code == 422 and bad.json()["detail"] == "job_id: must look like job-<32 hexadecimal digits>"
        assert http.get("/api/v1/results/job-000000000000").status_code == 404
    ensure_job = _job_id()
    asyncio.run(_with_aws(settings, lambda aws: JobsRepository(aws.dynamodb, settings.jobs_table).create(Job.from_item({
        "job_id": ensure_job, "patient_id": key(patient), "status": "queued", "s3_key": "k", "created_at": _now(),
        "updated_at": _now(), "progress": 0, "metadata": {"clinic_id": CLINIC, "pipeline": {"stages": {}}}}))))
    with workers.authed() as http:
        pending = http.get(f"/api/v1/results/{ensure_job}")
        assert pending.status_code == 404 and pending.json()["detail"] == f"job {ensure_job} has no result (queued)"
        assert http.get(f"/api/v1/jobs/{ensure_job}/detail").json()["result"] is None
    with workers.authed("other-clinician") as http:  # another clinic's clinician: exactly "no such job"
        theirs = http.get(f"/api/v1/jobs/{job_id}")
        assert theirs.status_code == 404 and theirs.json()["detail"] == f"no job {job_id}"
        assert http.get(f"/api/v1/patients/{patient}/jobs").json() == {"patient_id": patient, "count": 0, "jobs": []}


def test_patient_jobs_newest_first_with_limit_and_status_filter(workers):
    settings = workers.settings
    patient = _patient()
    ids = [_job_id() for _ in range(4)]

    async def body(aws):
        jobs = JobsRepository(aws.dynamodb, settings.jobs_table)
        for age, job_id in zip((4, 3, 2, 1), ids):
            stamp = _now(-age)
            await jobs.create(Job.from_item({"job_id": job_id, "patient_id": key(patient), "status": "queued",
                                             "s3_key": "k", "created_at": stamp, "updated_at": stamp, "progress": 0,
                                             "metadata": {"clinic_id": CLINIC, "pipeline": {"stages": {}}}}))
        await jobs.fail(ids[1], "the file is not a video: it is a JPEG image")
    asyncio.run(_with_aws(settings, body))
    with workers.authed() as http:
        listed = http.get(f"/api/v1/patients/{patient}/jobs", params={"limit": 3}).json()
        assert [j["job_id"] for j in listed["jobs"]] == [ids[3], ids[2], ids[1]] and listed["count"] == 3
        failed = http.get(f"/api/v1/patients/{patient}/jobs", params={"status_filter": "failed"}).json()
        assert [j["job_id"] for j in failed["jobs"]] == [ids[1]]
        assert failed["jobs"][0]["error"] == "the file is not a video: it is a JPEG image"
        bad = http.get(f"/api/v1/patients/{patient}/jobs", params={"status_filter": "done"})
        assert bad.status_code == 422 and bad.json()["detail"].startswith("status_filter:")
        assert http.get(f"/api/v1/patients/{patient}/jobs", params={"limit": 0}).status_code == 422
        assert http.get(f"/api/v1/patients/{patient}/jobs", params={"limit": 101}).status_code == 422
        bad_patient = http.get("/api/v1/patients/p!/jobs")
        assert bad_patient.status_code == 422
        assert bad_patient.json()["detail"] == "patient_id: must be 3 to 100 letters, digits, '_' or '-'"
        nobody = _patient()
        assert http.get(f"/api/v1/patients/{nobody}/jobs").json() == {"patient_id": nobody, "count": 0, "jobs": []}


def test_patient_results_paginate_newest_first_with_next_token(workers):
    settings = workers.settings
    patient, other = _patient(), _patient()
    items = [_history_item(patient, days, 0.1, "inconclusive") for days in (5, 4, 3, 2, 1)]
    seed_history(settings, items + [_history_item(other, 1, 0.1, "inconclusive")])
    newest_first = [i["job_id"] for i in reversed(items)]
    pages, token = [], None
    with workers.authed() as http:
        while True:
            params = {"limit": 2, **({"next_token": token} if token else {})}
            page = http.get(f"/api/v1/patients/{patient}/results", params=params).json()
            pages.append([r["job_id"] for r in page["results"]])
            token = page["next_token"]
            if token is None:
                break
        assert pages == [newest_first[:2], newest_first[2:4], newest_first[4:]]
        first = http.get(f"/api/v1/patients/{patient}/results", params={"limit": 2}).json()
        stolen = http.get(f"/api/v1/patients/{other}/results", params={"next_token": first["next_token"]})
        assert stolen.status_code == 422 and "another patient" in stolen.json()["detail"]
        garbage = http.get(f"/api/v1/patients/{patient}/results", params={"next_token": "%%%"})
        assert garbage.status_code == 422 and "not a token this API returned" in garbage.json()["detail"]
        empty = http.get(f"/api/v1/patients/{_patient()}/results").json()
        assert empty["results"] == [] and empty["next_token"] is None and empty["count"] == 0
        whole = http.get(f"/api/v1/patients/{patient}/results", params={"limit": 5}).json()
        assert whole["count"] == 5 and whole["next_token"] is None  # exactly one page: no empty page after it


def test_a_taken_api_port_stops_the_api_but_not_the_results_worker(workers, tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        log_path = tmp_path / "results.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "services.results.main"], cwd=REPO,
                                       env=worker_env(workers.settings, port, workers.ehr_queue_url),
                                       stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while "API not started" not in log_path.read_text(errors="replace"):
                assert process.poll() is None and time.monotonic() < deadline, log_path.read_text(errors="replace")
                time.sleep(0.2)
            assert "set RESULTS_API_PORT to a free port" in log_path.read_text()
            time.sleep(1)
            assert process.poll() is None  # still consuming the results queue
        finally:
            process.terminate()
            process.wait(timeout=30)


def test_an_unreachable_ehr_is_retried_then_the_job_completes_saying_so(aws_server):
    """The results stage in this process, on the real adapters, with the EHR queue gone."""
    from services.fusion.findings import build_results
    from services.fusion.rules import clinical_summary, fuse
    from services.fusion.settings import FusionSettings
    from services.results.ehr.publisher import EhrPublisher
    from services.results.settings import ResultsSettings
    from services.results.stage.handlers import RESULTS, ResultsDeps
    from shared.aws.storage import Storage
    from shared.domain.findings import AudioFindings
    from shared.runtime.events import FUSION_COMPLETED, FusionCompleted
    from shared.runtime.messaging import Delivery, Publisher
    from shared.runtime.runner import StageRunner
    from shared.runtime.worker import resolve_queues

    settings = aws_server
    sqs = sync_client(settings, "sqs")
    gone = sqs.create_queue(QueueName=f"ehr-gone-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    sqs.delete_queue(QueueUrl=gone)
    patient, job_id = _patient(), _job_id()
    audio = AudioFindings.model_validate({"job_id": job_id, "analysed_at": _now(), **_audio()})  # as fusion reads it
    skipped = {"vision": "the recording has no video track"}
    fusion = fuse(audio, None, ["audio"], skipped, FusionSettings())
    findings = {"job_id": job_id, "analysed_at": _now(), "results": build_results(
        {"multimodal_fusion": fusion, "clinical_summary": clinical_summary(fusion, None, _now())}, audio, None, skipped)}
    body = encode_event(FUSION_COMPLETED, "urn:schizodot:fusion", job_id, FusionCompleted(job_id=job_id))

    async def scenario(aws):
        jobs = JobsRepository(aws.dynamodb, settings.jobs_table)
        storage = Storage(aws.s3, settings.bucket)
        await storage.put_json(artifact_key(job_id, "fusion"), findings)
        created = _now()
        await jobs.create(Job.from_item({
            "job_id": job_id, "patient_id": key(patient), "status": "processing", "s3_key": "uploads/k.m4a",
            "created_at": created, "updated_at": created, "progress": 80,
            "metadata": {"clinic_id": CLINIC, "pipeline": {"expected": ["audio"], "skipped": skipped,
                                      "stages": {s: {"state": "done", "message_id": f"m-{s}",
                                                     "outputs": {"artifact_key": artifact_key(job_id, s)}}
                                                 for s in ("audio", "fusion")}}}}))
        queues, _ = await resolve_queues(aws.sqs, settings, "results")
        audit = AuditTrail(S3AuditStore(aws.s3, settings.audit_bucket), "results-api-tests", "schizodot-results")
        deps = ResultsDeps(ResultsSettings(), storage, ResultsWriter(aws.dynamodb, settings.users_table),
                           EhrPublisher(aws.sqs, None, gone, None), audit)
        runner = StageRunner(RESULTS, deps, jobs, storage, Publisher(aws.sqs, queues, "urn:test"))

        def delivery(attempt: int) -> Delivery:
            return Delivery("m-results", "r", body, {}, attempt, "schizodot-results",
                            final_attempt=attempt >= settings.max_receive_count)

        with pytest.raises(Exception, match="NonExistentQueue|does not exist"):
            await (await runner.accept(delivery(1))).work()
        still = await jobs.get(job_id)
        await (await runner.accept(delivery(settings.max_receive_count))).work()
        return still, await jobs.get(job_id)

    first, last = asyncio.run(_with_aws(settings, scenario))
    assert first.status == "processing"  # the first failure is retried, the job waits
    assert last.status == "completed" and last.progress == 100
    assert last.message.startswith("Analysis completed; sending it to the EHR failed:")


def test_results_event_fans_out_through_an_sns_topic(aws_server):
    from services.results.ehr.publisher import EhrPublisher, encode_results_event, event_id

    sns, sqs = sync_client(aws_server, "sns"), sync_client(aws_server, "sqs")
    topic = sns.create_topic(Name=f"ehr-results-{uuid.uuid4().hex[:6]}")["TopicArn"]
    inbox = sqs.create_queue(QueueName=f"ehr-fanout-{uuid.uuid4().hex[:6]}")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn, Attributes={"RawMessageDelivery": "true"})
    job_id = _job_id()
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": []}

    async def send(aws):
        await EhrPublisher(aws.sqs, sns, None, topic).publish(
            job_id, encode_results_event(job_id, bundle, "urn:schizodot:results", "4.0.1"))
    asyncio.run(_with_aws(aws_server, send))
    messages = sqs.receive_message(QueueUrl=inbox, WaitTimeSeconds=5).get("Messages", [])
    event = json.loads(messages[0]["Body"])
    assert event["id"] == event_id(job_id) and Bundle.model_validate(event["data"]).type == "collection"
