"""The audio stage on in-memory adapters, with a stand-in analyser: the sound
track is extracted (real ffmpeg), analysed off the event loop with progress, the
findings stored as the stage's artifact and fusion told. The analyser itself,
with its real models, is tested in test_analysis.py and test_worker_path.py."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
import wave

import pytest

from services.audio.handlers import AUDIO, make_analyse
from shared.aws.storage import MediaUnavailable
from shared.domain.checkin import artifact_key, utc_now
from shared.domain.errors import InputError
from shared.domain.job import PipelinePlan, new_job, plan_weights
from shared.domain.timeline import CheckinTimeline
from shared.fakes import FakeAdapters, deliver
from shared.runtime.events import AnalysisRequested, ModalityAnalysed, encode_event
from shared.runtime.modality import ModalityDeps


class StandInAnalyser:
    """Records the WAV it is given and reports progress as the real one does."""

    def __init__(self) -> None:
        self.wav_rate: int | None = None
        self.timeline = None

    def analyse(self, wav, progress, transcribe=True, languages=("en",), timeline=None):
        with wave.open(str(wav)) as audio:
            self.wav_rate = audio.getframerate()
        self.timeline = timeline
        progress(0.5, "measuring the voice")
        return {"speech_detected": True, "duration_seconds": 2.0, "models": {"vad": "stand-in"}}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("audio-media")
    voice, mute = folder / "voice.m4a", folder / "mute.mp4"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "sine=frequency=220:duration=2",
                    "-c:a", "aac", str(voice)], check=True)
    subprocess.run(["ffmpeg", "-loglevel", "error", "-f", "lavfi", "-i", "color=c=gray:s=64x64:r=10:d=2",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", str(mute)], check=True)
    return {"voice": voice, "mute": mute}


def _run(path, *, upload: bool = True, timeline: CheckinTimeline | None = None):
    fakes, analyser = FakeAdapters(), StandInAnalyser()
    reported: list[tuple[float, str]] = []
    report = fakes.jobs.report_progress

    async def recorded(run, fraction, message):
        reported.append((fraction, message))
        return await report(run, fraction, message)

    fakes.jobs.report_progress = recorded

    async def scenario():
        job_id, key = f"job-{uuid.uuid4().hex[:12]}", "uploads/patient-001/x/voice.m4a"
        await fakes.jobs.create(new_job(job_id, patient_id="patient-001", s3_key=key, filename="voice.m4a",
                                        content_type="audio/mp4", created_at=utc_now(), message="q", source="api",
                                        timeline=timeline))
        ingest = await fakes.jobs.claim_stage(job_id, "ingest", "m-ingest", "x")
        await fakes.jobs.finish_stage(ingest, "x", {}, PipelinePlan(expected=["audio"], weights=plan_weights(["audio"])))
        if upload:
            fakes.storage.put_file(key, path)
        deps = ModalityDeps(storage=fakes.storage, analyse=make_analyse(analyser, 16000), executor=None)
        request = AnalysisRequested(job_id=job_id)
        await deliver(fakes.runner(AUDIO, deps), encode_event(request.TYPE, "urn:schizodot:ingest", job_id, request))
        return job_id, await fakes.jobs.get(job_id)

    job_id, job = asyncio.run(scenario())
    return fakes, analyser, reported, job_id, job


def test_the_sound_track_is_analysed_stored_and_announced(media):
    fakes, analyser, reported, job_id, job = _run(media["voice"])
    assert analyser.wav_rate == 16000
    artifact = asyncio.run(fakes.storage.get_json(artifact_key(job_id, "audio")))
    assert artifact["modality"] == "audio" and artifact["job_id"] == job_id and artifact["speech_detected"] is True
    assert artifact["compute_seconds"] >= 0 and artifact["analysed_at"].endswith("Z")
    record = job.pipeline.stages["audio"]
    assert record.state == "done" and record.outputs.artifact_key == artifact_key(job_id, "audio")
    assert job.message == "Audio analysis done" and job.progress == 10 + 70
    assert fakes.publisher.sent == [("fusion", ModalityAnalysed(job_id=job_id, modality="audio"))]
    # Progress reaches the job at most once a second; the first report always does.
    assert reported and reported[0] == (0.02, "Audio: extracting the sound track")


def test_a_recording_without_sound_or_media_is_bad_input(media):
    with pytest.raises(InputError, match="no audio track"):
        _run(media["mute"])
    with pytest.raises(MediaUnavailable, match="does not exist"):
        _run(media["voice"], upload=False)


def test_the_checkins_timeline_reaches_the_analyser_for_the_answers(media):
    timeline = CheckinTimeline.of([{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
                                   {"step_id": "sleep", "kind": "prompt", "shown_at_ms": 1200}])
    _fakes, analyser, _reported, _job_id, _job = _run(media["voice"], timeline=timeline)
    assert analyser.timeline == timeline
    _fakes, analyser, _reported, _job_id, _job = _run(media["voice"])
    assert analyser.timeline is None  # the analyser's answers block then says the timeline is unknown
