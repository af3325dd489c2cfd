"""The fusion stage on in-memory adapters: it waits for every expected modality,
fuses once, reads the patient's own history, and writes one findings document
that results saves as it is."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from services.fusion.handlers import FUSION, FusionDeps
from services.fusion.settings import FusionSettings
from shared.domain.checkin import artifact_key, utc_now
from shared.domain.job import PipelinePlan, new_job, plan_weights
from shared.domain.markers import measured
from shared.domain.options import CheckinOptions
from shared.fakes import FakeAdapters, deliver
from shared.runtime.events import FusionCompleted, ModalityAnalysed, encode_event

AUDIO = {"audio_emotion": {"primary_emotion": None, "confidence": None, "all_emotions": [], "assessed": False,
                           "method": None, "reason": "no validated speech-emotion model is configured"},
         "vocal_markers": {"speaking_fraction": measured(62.0, "%", "Silero VAD"),
                           "speech_rate": measured(180.0, "syllables per min", "Praat syllable nuclei"),
                           "pitch_variability": measured(2.5, "semitones", "Praat pitch")},
         "speech_detected": True, "duration_seconds": 8.0}
VISION = {"facial_emotion": {"primary_emotion": "neutral", "confidence": 0.7, "face_detected": True, "frame_count": 40,
                             "assessed": True, "method": "fer + face-api",
                             "all_emotions": [{"emotion": "neutral", "confidence": 0.7}]},
          "video_markers": {"facial_expressivity": measured(0.08, "blendshape activity (0-1)", "blendshapes")},
          "compliance": {"pill_detected": None, "hand_detected": True, "face_detected": True, "compliance_score": None,
                         "confidence": None, "verification_status": "not_assessed", "assessed": False,
                         "reason": "no pill detector is configured",
                         "pill_detector": {"configured": False, "model": None, "validated_on_real_pills": False,
                                           "note": None}}}
SEED_SECTIONS = {"audio_emotion", "facial_emotion", "compliance", "multimodal_fusion", "clinical_summary"}


def artifact(job_id: str, modality: str, findings: dict) -> dict:
    """A modality's artifact as its stage writes it (shared.runtime.modality): the ids, then the findings."""
    return {"job_id": job_id, "modality": modality, "analysed_at": utc_now(), "compute_seconds": 1.5, **findings}


class FailingWriter:
    model_id = "stand-in-model"

    async def write(self, findings):
        raise TimeoutError("the model did not answer")


async def _analysed(fakes: FakeAdapters, patient: str, done: tuple[str, ...], expected=("audio", "vision"),
                    options: CheckinOptions | None = None, job_id: str | None = None,
                    clinic_id: str | None = None, audio: dict | None = None) -> str:
    """A job whose modalities in `done` have stored their findings."""
    job_id = job_id or f"job-{uuid.uuid4().hex[:12]}"
    await fakes.jobs.create(new_job(job_id, patient_id=patient, s3_key="uploads/x", filename="x.mp4",
                                    content_type="video/mp4", created_at=utc_now(), message="q", source="api",
                                    options=options, clinic_id=clinic_id))
    ingest = await fakes.jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
    await fakes.jobs.finish_stage(ingest, "x", {}, PipelinePlan(expected=list(expected), weights=plan_weights(list(expected)),
                                                                skipped={m: "not in the recording" for m in
                                                                         {"audio", "vision"} - set(expected)}))
    for modality in done:
        run = await fakes.jobs.claim_stage(job_id, modality, f"m-{modality}", "x")
        key = artifact_key(job_id, modality)
        await fakes.storage.put_json(key, artifact(job_id, modality, {"audio": audio or AUDIO, "vision": VISION}[modality]))
        await fakes.jobs.finish_stage(run, "done", {"artifact_key": key})
    return job_id


def _notice(job_id: str, modality: str) -> str:
    return encode_event(ModalityAnalysed.TYPE, f"urn:schizodot:{modality}", job_id,
                        ModalityAnalysed(job_id=job_id, modality=modality))


def _deps(fakes: FakeAdapters, writer=None) -> FusionDeps:
    return FusionDeps(FusionSettings(), fakes.storage, fakes.history, writer)


def test_the_first_notice_waits_and_the_last_one_fuses_once():
    fakes = FakeAdapters()

    async def scenario():
        job_id = await _analysed(fakes, "patient-001", ("audio",))
        runner = fakes.runner(FUSION, _deps(fakes))
        await deliver(runner, _notice(job_id, "audio"), message_id="m-a")
        waiting = await fakes.jobs.get(job_id)
        run = await fakes.jobs.claim_stage(job_id, "vision", "m-vision", "x")
        await fakes.storage.put_json(artifact_key(job_id, "vision"), artifact(job_id, "vision", VISION))
        await fakes.jobs.finish_stage(run, "done", {"artifact_key": artifact_key(job_id, "vision")})
        await deliver(runner, _notice(job_id, "vision"), message_id="m-v")
        await deliver(runner, _notice(job_id, "vision"), message_id="m-v2")  # a duplicate notice
        return job_id, waiting, await fakes.jobs.get(job_id)

    job_id, waiting, job = asyncio.run(scenario())
    assert "fusion" not in waiting.pipeline.stages  # not claimed: vision's own notice will fuse
    assert job.pipeline.stages["fusion"].state == "done" and job.pipeline.stages["fusion"].attempts == 1
    assert job.message.startswith("Findings combined: risk ")
    findings = asyncio.run(fakes.storage.get_json(artifact_key(job_id, "fusion")))
    assert set(findings) == {"job_id", "analysed_at", "compute_seconds", "results"}
    assert SEED_SECTIONS <= set(findings["results"])
    assert findings["results"]["facial_emotion"] == VISION["facial_emotion"]
    vocal = findings["results"]["vocal_markers"]
    assert set(vocal) == set(AUDIO["vocal_markers"])  # each marker as measured, with its baseline block added
    assert all({k: v for k, v in vocal[name].items() if k != "baseline"} == AUDIO["vocal_markers"][name]
               and vocal[name]["baseline"]["available"] is False for name in vocal)  # a first check-in
    assert findings["results"]["clinical_summary"]["generated_by"] == "rule_based"
    assert fakes.publisher.sent == [("results", FusionCompleted(job_id=job_id))] * 2  # the duplicate re-announces


def test_the_patients_own_history_is_the_baseline():
    """Only the patient's own check-ins count: another patient of the clinic, and another
    clinic's patient with the same clinic-local id, are in the store with more check-ins."""
    fakes = FakeAdapters()
    _history(fakes, "clinic-a.patient-007", 3)
    _history(fakes, "clinic-a.patient-008", 5)  # another patient of the same clinic
    _history(fakes, "clinic-b.patient-007", 4)  # another clinic's namesake

    async def scenario():
        job_id = f"job-{uuid.uuid4().hex[:12]}"
        await _analysed(fakes, "clinic-a.patient-007", ("audio", "vision"), job_id=job_id, clinic_id="clinic-a")
        await deliver(fakes.runner(FUSION, _deps(fakes)), _notice(job_id, "vision"))
        return await fakes.storage.get_json(artifact_key(job_id, "fusion"))

    fusion = asyncio.run(scenario())["results"]["multimodal_fusion"]
    assert fusion["baseline"]["available"] is True and fusion["baseline"]["checkins_compared"] == 3


QUALITY = {"snr_db": 40.0, "clipped_fraction": 0.0, "voiced_seconds": 6.0,
           "source": {"sample_rate_hz": 48000, "channels": 1, "codec": "aac", "device": None, "encoder": None}}


def _answers(latency: float) -> dict:
    return {"assessed": True, "reason": None, "method": "timeline windows", "flags": [],
            "items": [{"step_id": "mood", "start_s": 4.0, "end_s": 12.0, "clipped": False, "transcript": "fine",
                       "markers": {"response_latency": measured(latency, "s", "VAD onset after the prompt")}}]}


def test_the_recording_quality_and_the_answers_are_kept_and_each_answer_gets_its_baseline():
    fakes = FakeAdapters()
    _history(fakes, "patient-009", 4, audio_quality=QUALITY, answers=_answers(1.0))

    async def scenario(audio):
        job_id = await _analysed(fakes, "patient-009", ("audio", "vision"), audio=audio)
        await deliver(fakes.runner(FUSION, _deps(fakes)), _notice(job_id, "vision"))
        return (await fakes.storage.get_json(artifact_key(job_id, "fusion")))["results"]

    results = asyncio.run(scenario({**AUDIO, "audio_quality": QUALITY, "answers": _answers(1.05)}))
    assert results["audio_quality"] == QUALITY  # the next check-ins' quality gate compares the recording with it
    latency = results["answers"]["items"][0]["markers"]["response_latency"]
    assert latency["value"] == 1.05 and latency["baseline"]["available"] is True
    assert latency["baseline"]["checkins"] == 4 and latency["baseline"]["notable"] is False
    assert results["answers"]["items"][0]["transcript"] == "fine"
    assert results["vocal_markers"]["speech_rate"]["baseline"]["measurable"] is True
    phone = {**QUALITY, "source": {**QUALITY["source"], "sample_rate_hz": 8000}}
    other = asyncio.run(scenario({**AUDIO, "audio_quality": phone}))
    assert "answers" not in other  # audio without answers: nothing added
    assert other["vocal_markers"]["speech_rate"]["baseline"]["reason"].startswith("not measurable: recorded differently")
    assert other["multimodal_fusion"]["baseline"]["not_measurable"].startswith("not measurable: recorded differently")


def _history(fakes: FakeAdapters, patient: str, checkins: int, **results) -> None:
    now = datetime.now(timezone.utc)
    for days in range(1, checkins + 1):
        stamp = (now - timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        asyncio.run(fakes.history.save({
            "user_id": patient, "timestamp": stamp, "job_id": f"job-{days:012x}", "s3_key": "k",
            "analysis_type": "multimodal", "analyzed_at": stamp, "status": "completed",
            "results": {"facial_emotion": VISION["facial_emotion"], "vocal_markers": AUDIO["vocal_markers"],
                        "compliance": VISION["compliance"], "multimodal_fusion": {"risk_level": "low"}, **results}}))


def test_the_thresholds_set_on_the_checkin_are_applied_and_shown_in_the_result():
    fakes = FakeAdapters()
    _history(fakes, "patient-008", 3)
    options = CheckinOptions(analyses=["audio", "vision"], thresholds={"baseline_window": 2,
                                                                         "baseline_min_checkins": 2})

    async def scenario(chosen):
        job_id = await _analysed(fakes, "patient-008", ("audio", "vision"), options=chosen)
        await deliver(fakes.runner(FUSION, _deps(fakes)), _notice(job_id, "vision"))
        return (await fakes.storage.get_json(artifact_key(job_id, "fusion")))["results"]

    results = asyncio.run(scenario(options))
    assert results["multimodal_fusion"]["baseline"]["checkins_compared"] == 2  # the window given, not FUSION_'s 10
    speech = results["vocal_markers"]["speech_rate"]["baseline"]
    assert speech["available"] and speech["checkins"] == 2
    assert results["options"] == {
        "analyses_requested": ["audio", "vision"], "modalities_analysed": ["audio", "vision"],
        "thresholds": {"baseline_window": 2, "baseline_min_checkins": 2, "missed_medication_streak": 3},
        "thresholds_set_on_checkin": {"baseline_window": 2, "baseline_min_checkins": 2}}
    default = asyncio.run(scenario(None))
    assert default["multimodal_fusion"]["baseline"]["checkins_compared"] == 3
    assert default["options"]["analyses_requested"] is None and default["options"]["thresholds_set_on_checkin"] == {}
    assert default["options"]["thresholds"]["baseline_window"] == 10


def test_a_failing_llm_leaves_the_rule_based_summary_saying_why():
    fakes = FakeAdapters()

    async def scenario():
        job_id = await _analysed(fakes, "patient-001", ("audio",), expected=("audio",))
        await deliver(fakes.runner(FUSION, _deps(fakes, FailingWriter())), _notice(job_id, "audio"))
        return await fakes.storage.get_json(artifact_key(job_id, "fusion"))

    results = asyncio.run(scenario())["results"]
    summary = results["clinical_summary"]
    assert summary["generated_by"] == "rule_based" and "did not answer" in summary["llm_error"]
    assert results["facial_emotion"]["assessed"] is False  # vision was not in the recording: named, not filled in


def test_a_lost_modality_artifact_is_an_error_to_retry():
    fakes = FakeAdapters()

    async def scenario():
        job_id = await _analysed(fakes, "patient-001", ("audio",), expected=("audio",))
        fakes.storage.objects.clear()
        with pytest.raises(KeyError, match="NoSuchKey"):
            await deliver(fakes.runner(FUSION, _deps(fakes)), _notice(job_id, "audio"))

    asyncio.run(scenario())


class _ConverseServer:
    """A local HTTP server that speaks Bedrock Runtime's Converse API (`POST /model/{modelId}/converse`), so
    the real writer (boto3, SigV4, retries, JSON) runs end to end; it answers with `answer_text`."""

    def __init__(self, answer_text: str) -> None:
        import json
        import threading
        import urllib.parse
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": urllib.parse.unquote(self.path), "body": body,
                                        "signed": self.headers.get("Authorization", "").startswith("AWS4-HMAC-SHA256")})
                answer = json.dumps({"output": {"message": {"role": "assistant", "content": [{"text": answer_text}]}},
                                     "stopReason": "end_turn", "usage": {"inputTokens": 10, "outputTokens": 20,
                                                                         "totalTokens": 30},
                                     "metrics": {"latencyMs": 5}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_port}"
        self._thread = threading.Thread(target=self._http.serve_forever, daemon=True)

    def __enter__(self) -> "_ConverseServer":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._http.shutdown()
        self._http.server_close()


def _bedrock_writer(url: str, monkeypatch):
    from services.fusion.llm import BedrockSummaryWriter
    from shared.settings import CommonSettings

    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    settings = FusionSettings(llm_enabled=True, llm_model_id="anthropic.claude-3-haiku-20240307-v1:0",
                              llm_timeout_seconds=5, llm_max_attempts=1)
    return BedrockSummaryWriter(settings, CommonSettings(aws_region="us-east-1", aws_endpoint_url=url))


def test_the_llm_summary_is_used_and_names_its_model_when_bedrock_answers(monkeypatch):
    import json

    answer = {"emotional_state": "Neutral on camera; voice emotion was not assessed.",
              "medication_adherence": "Not verified: no pill detector is configured.",
              "recommendations": ["Ask about medication at the next visit"], "risk_level": "high"}
    fakes = FakeAdapters()
    with _ConverseServer("Here is the summary:\n" + json.dumps(answer)) as bedrock:
        async def scenario():
            job_id = await _analysed(fakes, "patient-llm-001", ("audio", "vision"))
            await deliver(fakes.runner(FUSION, _deps(fakes, _bedrock_writer(bedrock.url, monkeypatch))),
                          _notice(job_id, "vision"))
            return await fakes.storage.get_json(artifact_key(job_id, "fusion"))

        results = asyncio.run(scenario())["results"]
    [request] = bedrock.requests
    assert request["path"] == "/model/anthropic.claude-3-haiku-20240307-v1:0/converse" and request["signed"]
    assert "patient-llm-001" not in json.dumps(request["body"])  # no identifier leaves
    shown = json.loads(request["body"]["messages"][0]["content"][0]["text"])
    assert shown["overall_emotion"] == results["multimodal_fusion"]["overall_emotion"]
    summary = results["clinical_summary"]
    assert summary["generated_by"] == "bedrock:anthropic.claude-3-haiku-20240307-v1:0"
    assert {k: summary[k] for k in ("emotional_state", "medication_adherence", "recommendations")} == {
        k: answer[k] for k in ("emotional_state", "medication_adherence", "recommendations")}
    rules = summary["rule_based_summary"]  # the rules' wording is kept beside it
    assert rules["emotional_state"] and rules["emotional_state"] != answer["emotional_state"]
    level = results["multimodal_fusion"]["risk_level"]
    assert level != "high" and "risk_level" not in summary  # the model's "high" is dropped: the rules decide
    assert summary["risk_assessment"].startswith(f"{level.capitalize()} risk - ")
    assert "llm_error" not in summary


def test_an_llm_answer_that_is_not_the_summary_asked_for_leaves_the_rules_summary_saying_why(monkeypatch):
    fakes = FakeAdapters()
    with _ConverseServer("I cannot help with that.") as bedrock:
        async def scenario():
            job_id = await _analysed(fakes, "patient-llm-002", ("audio", "vision"))
            await deliver(fakes.runner(FUSION, _deps(fakes, _bedrock_writer(bedrock.url, monkeypatch))),
                          _notice(job_id, "vision"))
            return await fakes.storage.get_json(artifact_key(job_id, "fusion"))

        summary = asyncio.run(scenario())["results"]["clinical_summary"]
    assert len(bedrock.requests) == 1
    assert summary["generated_by"] == "rule_based"
    assert summary["llm_model_id"] == "anthropic.claude-3-haiku-20240307-v1:0"
    assert summary["llm_error"] == "ValueError: the model's answer holds no JSON object"
    assert "rule_based_summary" not in summary


@pytest.mark.parametrize("broken, named", [
    ({"facial_emotion": {"primary_emotion": "neutral", "all_emotions": [{"emotion": "neutral"}]}},
     "facial_emotion.all_emotions.0.confidence: Field required"),
    ({"compliance": "taken"}, "compliance: Input should be a valid dictionary"),
    ({"modality": "audio"}, "modality: Input should be 'vision'"),
])
def test_a_modality_artifact_that_does_not_parse_fails_the_job_in_words_and_loses_nothing(broken, named):
    """Fusion parses each artifact once as it enters (shared.domain.findings): a bad one is an InputError (the
    consumer fails the job with its message at once, tests/unit/test_consumer.py) that names the stage's
    document and the field; the artifact stays as it was, and nothing is fused or announced."""
    from shared.domain.errors import InputError

    fakes = FakeAdapters()

    async def scenario():
        job_id = await _analysed(fakes, "patient-001", ("audio", "vision"))
        bad = {**artifact(job_id, "vision", VISION), **broken}
        await fakes.storage.put_json(artifact_key(job_id, "vision"), bad)
        runner = fakes.runner(FUSION, _deps(fakes))
        with pytest.raises(InputError) as raised:
            await deliver(runner, _notice(job_id, "vision"))
        return job_id, bad, raised.value

    job_id, bad, error = asyncio.run(scenario())
    assert str(error).startswith(f"the vision stage's findings (artifacts/{job_id}/vision.json) is not a valid "
                                 "VisionFindings: ")
    assert named in str(error)
    assert asyncio.run(fakes.storage.get_json(artifact_key(job_id, "vision"))) == bad  # kept for a person to read
    assert (fakes.storage.bucket, artifact_key(job_id, "fusion")) not in fakes.storage.objects
    assert fakes.publisher.sent == []


def test_an_artifact_that_is_not_json_fails_the_job_in_words():
    from shared.domain.errors import InputError

    fakes = FakeAdapters()

    async def scenario():
        job_id = await _analysed(fakes, "patient-001", ("audio", "vision"))
        await fakes.storage.put_bytes(artifact_key(job_id, "audio"), b'{"job_id": "job-', "application/json")
        with pytest.raises(InputError, match=rf"the audio stage's findings \(artifacts/{job_id}/audio.json\) "
                                             "is not JSON"):
            await deliver(fakes.runner(FUSION, _deps(fakes)), _notice(job_id, "vision"))

    asyncio.run(scenario())
