"""Observability through the whole stack: one trace per check-in across the five
services (received by a real OTLP/HTTP receiver), JSON logs that carry the job
and trace ids and no patient id, and Prometheus metrics."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from dataclasses import dataclass

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from schizodot import stack
from schizodot.dev_identity import DEV_CLINIC
from shared.domain.checkin import job_id_for_event
from shared.domain.job import Job
from shared.runtime.events import CHECKIN_SUBMITTED
from shared.settings import CommonSettings
from tests.conftest import RunningStack, free_port
from tests.integration.otlp_receiver import OtlpReceiver, ReceivedSpan

pytestmark = pytest.mark.slow

SERVICES = {f"schizodot-{name}" for name in stack.SERVICES}


@dataclass
class TracedStack:
    running: RunningStack
    receiver: OtlpReceiver

    @property
    def config(self) -> stack.StackConfig:
        return self.running.config


@pytest.fixture(scope="module")
def traced_stack(tmp_path_factory) -> TracedStack:
    """The embedded stack exporting spans to an in-test OTLP receiver, serving /metrics on free ports."""
    receiver = OtlpReceiver().start()
    config = stack.StackConfig(
        state_dir=tmp_path_factory.mktemp("traced-stack"),
        aws_port=free_port(),
        api_port=free_port(),
        results_api_port=free_port(),
        metrics_ports={name: free_port() for name in stack.SERVICES},
        extra_env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
            "OTEL_TRACES_SAMPLER": "parentbased_always_on",
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # ms: spans arrive while the test waits
            "SCHIZODOT_QUEUE_METRICS_INTERVAL_SECONDS": "1",
            "SCHIZODOT_WAIT_TIME_SECONDS": "2",
        },
    )
    stack.up(config, timeout=240)
    settings = CommonSettings(aws_endpoint_url=config.endpoint, aws_region="us-east-1")
    try:
        yield TracedStack(RunningStack(config, settings), receiver)
    finally:
        stack.down(config)
        receiver.stop()


def _completed_trace(receiver: OtlpReceiver, trace_id: str) -> list[ReceivedSpan]:
    # Each process exports on its own schedule: wait for every consumer span the
    # job makes (fusion gets one notice per modality), not just the last stage's.
    expected = sorted(["process schizodot-ingest", "process schizodot-audio", "process schizodot-vision",
                       "process schizodot-fusion", "process schizodot-fusion", "process schizodot-results"])

    def complete(spans: list[ReceivedSpan]) -> bool:
        ours = [s for s in spans if s.trace_id == trace_id]
        consumers = sorted(s.name for s in ours if s.kind == "CONSUMER")
        return {s.service for s in ours} >= SERVICES and consumers == expected

    receiver.wait_for(complete, timeout=20)
    return receiver.trace(trace_id)


@pytest.fixture(scope="module")
def checkin(traced_stack, checkin_clip):
    """One check-in uploaded through the API, completed, with its trace."""
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    job_id = traced_stack.running.submit(checkin_clip, patient)
    job = traced_stack.running.wait_for_job(job_id, timeout=120)
    assert job["status"] == "completed", job.get("error")
    trace_id = Job.from_item(job).pipeline.trace_id
    assert trace_id and len(trace_id) == 32, "the job item keeps its trace id (metadata.pipeline.trace_id)"
    return patient, job, _completed_trace(traced_stack.receiver, trace_id)


def _one(spans: list[ReceivedSpan], **match) -> ReceivedSpan:
    found = [s for s in spans if all(getattr(s, k) == v for k, v in match.items())]
    assert len(found) == 1, f"expected one span {match}, found {[(s.service, s.name) for s in found]}"
    return found[0]


def test_a_checkin_is_one_trace_across_all_five_services(checkin):
    _patient, job, spans = checkin
    trace_id = Job.from_item(job).pipeline.trace_id
    assert {s.service for s in spans} >= SERVICES
    by_id = {s.span_id: s for s in spans}

    # The API request that created the job is the root; ingest continues it after the upload.
    root = _one(spans, parent_span_id=None)
    assert (root.service, root.kind, root.name) == ("schizodot-ingest", "SERVER", "POST /api/v1/analyze")
    created = _one(spans, name="create job")
    assert created.attributes["schizodot.job_id"] == job["job_id"]
    chain = [created]  # FastAPI's own spans (endpoint, ...) may sit between the request and the job
    while chain[-1].parent_span_id in by_id:
        chain.append(by_id[chain[-1].parent_span_id])
    assert chain[-1] is root and {s.service for s in chain} == {"schizodot-ingest"}
    ingest = _one(spans, name="process schizodot-ingest")
    assert ingest.parent_span_id == created.span_id
    assert ingest.links[0][:2] == (trace_id, created.span_id) and ingest.links[0][2]["schizodot.context_from"] == "job"

    # Every other stage: a CONSUMER span, child of the PRODUCER span that sent its message, linked to it.
    consumers = [s for s in spans if s.kind == "CONSUMER" and s is not ingest]
    assert sorted(s.name for s in consumers) == sorted([
        "process schizodot-audio", "process schizodot-vision",
        "process schizodot-fusion", "process schizodot-fusion",  # one notice per modality
        "process schizodot-results"])
    for consumer in consumers:
        queue = consumer.name.removeprefix("process ")
        producer = by_id[consumer.parent_span_id]
        assert (producer.kind, producer.name) == ("PRODUCER", f"publish {queue}")
        assert [(t, s) for t, s, _ in consumer.links] == [(trace_id, producer.span_id)]
        for span, operation in ((producer, "send"), (consumer, "process")):
            assert span.attributes["messaging.system"] == "aws_sqs"
            assert span.attributes["messaging.destination.name"] == queue
            assert span.attributes["messaging.operation.type"] == operation
        assert consumer.attributes["messaging.message.id"] == producer.attributes["messaging.message.id"]
        assert consumer.attributes["schizodot.job_id"] == job["job_id"]

    # Audio and vision side by side: both requested by the one ingest delivery.
    audio = _one(spans, name="process schizodot-audio")
    vision = _one(spans, name="process schizodot-vision")
    assert by_id[audio.parent_span_id].parent_span_id == by_id[vision.parent_span_id].parent_span_id == ingest.span_id
    fusion_parents = {by_id[s.parent_span_id].service for s in consumers if s.name == "process schizodot-fusion"}
    assert fusion_parents == {"schizodot-audio", "schizodot-vision"}
    results = _one(spans, name="process schizodot-results")
    assert by_id[results.parent_span_id].service == "schizodot-fusion"


def test_the_trace_shows_aws_calls_models_and_work(checkin):
    _patient, job, spans = checkin
    by_id = {s.span_id: s for s in spans}

    def inside(span: ReceivedSpan, ancestor_name: str) -> bool:
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            if span.name == ancestor_name:
                return True
        return False

    aws_calls = [s for s in spans if s.kind == "CLIENT" and s.attributes.get("rpc.system") == "aws-api"]
    assert {"S3.GetObject", "S3.PutObject", "DynamoDB.UpdateItem", "DynamoDB.PutItem", "SQS.SendMessage",
            "SQS.DeleteMessage"} <= {s.name for s in aws_calls}
    assert any(s.name == "S3.GetObject" and inside(s, "process schizodot-vision") for s in aws_calls)
    assert any(s.name == "DynamoDB.PutItem" and inside(s, "save results") for s in aws_calls)  # SchizodotUsers

    audio = _one(spans, name="audio analysis")
    assert audio.attributes["schizodot.job_id"] == job["job_id"]
    assert "silero" in audio.attributes["schizodot.model.vad"].lower()
    assert audio.attributes["schizodot.model.features"].startswith("Praat ")
    assert 5 < audio.attributes["schizodot.audio_seconds"] < 7  # the clip is 6 s
    vision = _one(spans, name="vision analysis")
    assert vision.attributes["schizodot.frames_analysed"] > 0
    assert "fer" in vision.attributes["schizodot.model.emotion"]
    assert _one(spans, name="fusion rules").service == "schizodot-fusion"
    assert _one(spans, name="save results").service == "schizodot-results"


def test_no_patient_identifier_in_any_span(traced_stack, checkin, tmp_path):
    patient, _job, _spans = checkin
    # A check-in that fails (the error names the upload key) must not leak it either.
    bad = tmp_path / "not-a-video.mp4"  # starts like an MP4 (the upload takes it), then noise (the probe fails it)
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + secrets.token_bytes(4096))
    failed_id = traced_stack.running.submit(bad, patient)
    failed = traced_stack.running.wait_for_job(failed_id, timeout=60)
    assert failed["status"] == "failed"
    failed_trace = Job.from_item(failed).pipeline.trace_id
    traced_stack.receiver.wait_for(
        lambda spans: any(s.trace_id == failed_trace and s.name == "process schizodot-ingest" for s in spans))
    ingest = _one(traced_stack.receiver.trace(failed_trace), name="process schizodot-ingest")
    assert ingest.events and ingest.status_message, "the failure is recorded on the span"

    leaking = [(s.service, s.name) for s in traced_stack.receiver.spans if patient in s.text()]
    assert not leaking, f"spans carry the patient id: {leaking}"


def test_an_ehr_event_continues_the_senders_trace(traced_stack, checkin_clip):
    """The CloudEvents distributed-tracing extension starts the job's trace where the EHR's is."""
    running = traced_stack.running
    patient = f"patient-{uuid.uuid4().hex[:8]}"
    key = f"incoming/{DEV_CLINIC}/{uuid.uuid4().hex}/checkin.mp4"
    running.client("s3").put_object(Bucket=running.settings.bucket, Key=key, Body=checkin_clip.read_bytes())
    sender_trace, sender_span = secrets.token_hex(16), secrets.token_hex(8)
    event = {
        "specversion": "1.0", "id": f"evt-{uuid.uuid4().hex[:8]}", "source": "urn:ehr:observability-test",
        "type": CHECKIN_SUBMITTED, "time": "2026-11-25T10:00:00Z", "datacontenttype": "application/json",
        "traceparent": f"00-{sender_trace}-{sender_span}-01",
        "data": {"clinic_id": DEV_CLINIC, "patient_id": patient, "s3_key": key, "content_type": "video/mp4"},
    }
    running.client("sqs").send_message(
        QueueUrl=running.queue_url(running.settings.queue_name("ingest")), MessageBody=json.dumps(event))
    job = running.wait_for_job(job_id_for_event(event["source"], event["id"], DEV_CLINIC), timeout=120)
    assert job["status"] == "completed", job.get("error")
    assert Job.from_item(job).pipeline.trace_id == sender_trace
    spans = _completed_trace(traced_stack.receiver, sender_trace)
    ingest = _one(spans, name="process schizodot-ingest")
    assert ingest.parent_span_id == sender_span
    assert ingest.links[0][:2] == (sender_trace, sender_span) and ingest.links[0][2]["schizodot.context_from"] == "cloudevent"
    assert {s.service for s in spans} >= SERVICES


def _job_log_lines(config: stack.StackConfig, job_id: str) -> dict[str, list[dict]]:
    lines: dict[str, list[dict]] = {}
    for name in stack.SERVICES:
        for raw in (config.state_dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                record = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("job_id") == job_id:
                lines.setdefault(name, []).append(record)
    return lines


def test_logs_carry_job_and_trace_ids_and_no_patient_id(traced_stack, checkin):
    patient, job, _spans = checkin
    trace_id = Job.from_item(job).pipeline.trace_id
    lines = _job_log_lines(traced_stack.config, job["job_id"])
    assert set(lines) == set(stack.SERVICES), f"services that logged the job: {sorted(lines)}"
    for name, records in lines.items():
        for record in records:
            assert record["service"] == f"schizodot-{name}" and record["stage"] == name, record
            assert record["trace_id"] == trace_id and len(record["span_id"]) == 16, record
            assert record["level"] and record["timestamp"].endswith("Z"), record
    for name in stack.SERVICES:
        text = (traced_stack.config.state_dir / "logs" / f"{name}.log").read_text(errors="replace")
        assert patient not in text, f"{name}'s log names the patient"


def _metrics(port: int) -> dict[tuple[str, frozenset], float]:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _value(samples_: dict, name: str, **labels: str) -> float:
    matching = [v for (n, ls), v in samples_.items() if n == name and set(labels.items()) <= ls]
    assert matching, f"no {name} {labels} in {sorted({n for n, _ in samples_ if n.startswith('schizodot')})}"
    return sum(matching)


def test_metrics_are_served_for_prometheus(traced_stack, checkin):
    ports = traced_stack.config.metrics_ports
    for name in stack.SERVICES:
        found = _metrics(ports[name])
        assert _value(found, "schizodot_stage_duration_seconds_count", stage=name, outcome="success") >= 1
        assert _value(found, "schizodot_message_wait_seconds_count", queue=f"schizodot-{name}") >= 1
    deadline = time.monotonic() + 10  # the depth poller runs every second here
    while True:
        audio = _metrics(ports["audio"])
        try:
            assert _value(audio, "schizodot_queue_messages", queue="schizodot-audio", state="visible") == 0
            assert _value(audio, "schizodot_queue_messages", queue="schizodot-audio-dlq", state="visible") >= 0
            assert _value(audio, "schizodot_queue_oldest_message_age_seconds", queue="schizodot-audio") == 0
            break
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    results = _metrics(ports["results"])
    assert _value(results, "schizodot_jobs_completed_total") >= 1
    assert _value(results, "schizodot_job_duration_seconds_count") >= 1


def test_failed_jobs_are_counted_by_reason(traced_stack, tmp_path):
    bad = tmp_path / "noise.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)  # an MP4's first box, then no media
    job = traced_stack.running.wait_for_job(traced_stack.running.submit(bad, "patient-metrics"), timeout=60)
    assert job["status"] == "failed"
    ingest = _metrics(traced_stack.config.metrics_ports["ingest"])
    assert _value(ingest, "schizodot_jobs_failed_total", stage="ingest", reason="input") >= 1
    assert _value(ingest, "schizodot_stage_duration_seconds_count", stage="ingest", outcome="input_error") >= 1


def test_dead_letters_are_counted(traced_stack):
    running = traced_stack.running
    running.client("sqs").send_message(
        QueueUrl=running.queue_url(running.settings.queue_name("fusion")), MessageBody="this is not an event")
    assert running.drain_dead_letters("fusion", wait=30), "the malformed message reaches the DLQ"
    fusion = _metrics(traced_stack.config.metrics_ports["fusion"])
    assert _value(fusion, "schizodot_messages_dead_lettered_total", queue="schizodot-fusion", reason="malformed") >= 1
    assert _value(fusion, "schizodot_stage_duration_seconds_count", stage="fusion", outcome="dead_lettered") >= 1
