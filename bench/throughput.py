"""Benchmark: throughput of the embedded stack against replicas per stage, and
what keeping the AWS server's data on disk costs. The configurations run one
after another in one invocation, on the same clip, so their ratios compare:

  memory, 1 replica   moto in memory (no durability), one process per stage
  fsync,  1 replica   the default: every AWS change fsynced before it is acknowledged
  fsync,  2 replicas  two processes for every stage

For each: check-ins per minute, media seconds analysed per wall second, and
where the time went: each stage's busy share (compute seconds / (wall x
replicas x messages per process), from the stages' own timing on the job
item: 1.0 means every slot was working all the time), the CPU seconds of
every process (from /proc) and how busy the machine's CPUs were. The stage
with the highest busy share, or the AWS server when it is, is the bottleneck.

    python -m bench.throughput --checkins 16 --in-flight 6      # make bench-throughput
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

from schizodot import samples, stack
from shared.aws import sync_client
from shared.dynamo import from_item
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


def _one_checkin(http: httpx.Client, api: str, clip: Path, patient: str) -> str:
    created = http.post(f"{api}/api/v1/analyze", json={
        "patient_id": patient, "filename": clip.name, "content_type": "video/mp4"})
    created.raise_for_status()
    job = created.json()
    http.put(job["upload_url"], content=clip.read_bytes(), headers=job["upload_headers"]).raise_for_status()
    while True:
        status = http.get(f"{api}/api/v1/jobs/{job['job_id']}").json()
        if status["status"] in ("completed", "failed"):
            if status["status"] == "failed":
                raise SystemExit(f"a check-in failed: {status.get('error')}")
            return job["job_id"]
        time.sleep(0.5)


def measure(label: str, durability: str, replicas: int, clip: Path, clip_seconds: float, checkins: int,
            in_flight: int, workdir: Path) -> dict:
    config = stack.StackConfig(state_dir=workdir / label.replace(", ", "-").replace(" ", "-"),
                               aws_port=_free_port(), api_port=_free_port(), results_api_port=_free_port(),
                               replicas={name: replicas for name in stack.SERVICES}, durability=durability)
    stack.up(config, timeout=600)
    settings = CommonSettings(aws_endpoint_url=config.endpoint, aws_region="us-east-1")
    try:
        with httpx.Client(timeout=120) as http:
            for _ in range(min(2, checkins)):  # warm-up: first inferences, caches
                _one_checkin(http, config.api_url, clip, "bench-warmup")
            pids = {name: info["pid"] for name, info in
                    json.loads((config.state_dir / "pids.json").read_text()).items() if name != "supervisor"}
            cpu_before = {name: _cpu_seconds(pid) for name, pid in pids.items()}
            busy_before = _machine_busy()
            started = time.monotonic()
            with ThreadPoolExecutor(in_flight) as pool:
                local = threading.local()

                def run(index: int) -> str:
                    if not hasattr(local, "http"):
                        local.http = httpx.Client(timeout=120)
                    return _one_checkin(local.http, config.api_url, clip, f"bench-{index % 4}")

                job_ids = list(pool.map(run, range(checkins)))
            wall = time.monotonic() - started
            busy_after = _machine_busy()
            cpu = {name: round(_cpu_seconds(pid) - cpu_before[name], 1) for name, pid in pids.items()}
        dynamodb = sync_client(settings, "dynamodb")
        compute: dict[str, float] = collections.defaultdict(float)
        for job_id in job_ids:
            job = from_item(dynamodb.get_item(TableName=settings.jobs_table, Key={"job_id": {"S": job_id}},
                                              ConsistentRead=True)["Item"])
            for stage in ANALYSED:
                compute[stage] += job["metadata"]["pipeline"]["stages"][stage]["outputs"]["compute_seconds"]
    finally:
        stack.down(config)
    cpu_by_process_kind: dict[str, float] = collections.defaultdict(float)
    for name, seconds in cpu.items():
        cpu_by_process_kind[stack.Supervisor.service_of(name)] = round(cpu_by_process_kind[stack.Supervisor.service_of(name)] + seconds, 1)
    slots = replicas * CommonSettings().concurrency  # messages a stage works on at once
    busy_share = {stage: round(compute[stage] / (wall * slots), 2) for stage in ANALYSED}
    aws_share = round(cpu_by_process_kind["aws"] / wall, 2)  # moto is one process (threads under the GIL)
    candidates = {**{f"{s} stage": v for s, v in busy_share.items()}, "AWS server": aws_share}
    machine = (busy_after[0] - busy_before[0]) / max(busy_after[1] - busy_before[1], 1)
    return {
        "configuration": label, "checkins": checkins, "in_flight": in_flight, "wall_seconds": round(wall, 1),
        "checkins_per_minute": round(checkins / wall * 60, 2),
        "media_seconds_per_wall_second": round(checkins * clip_seconds / wall, 2),
        "stage_busy_share": busy_share, "aws_server_cpu_share": aws_share,
        "cpu_seconds_by_process": dict(sorted(cpu_by_process_kind.items())),
        "machine_cpu_busy": round(machine, 2), "cpus": os.cpu_count(),
        "bottleneck": max(candidates, key=candidates.get),
    }


def aws_requests(seconds: float = 8.0) -> list[dict]:
    """Requests per second the AWS server answers in each durability mode: DynamoDB
    PutItem, and SQS send + receive + delete of one message (one client, in sequence)."""
    import subprocess
    import sys

    from shared.infra import ensure_infrastructure

    rows = []
    with tempfile.TemporaryDirectory(prefix="schizodot-aws-bench-") as workdir:
        for mode, extra in (("memory", []), ("process", ["--sync", "normal"]), ("fsync", ["--sync", "full"])):
            port = _free_port()
            command = [sys.executable, "-m", "schizodot.durable_aws", "-p", str(port)]
            if mode != "memory":
                command += ["--data-dir", str(Path(workdir) / mode), *extra]
            server = subprocess.Popen(command, cwd=stack.REPO_ROOT, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
            try:
                stack.wait_for_port(port, 60)
                settings = CommonSettings(aws_endpoint_url=f"http://127.0.0.1:{port}", aws_region="us-east-1")
                ensure_infrastructure(settings)
                dynamodb, sqs = sync_client(settings, "dynamodb"), sync_client(settings, "sqs")
                queue = sqs.get_queue_url(QueueName=settings.queue_name("audio"))["QueueUrl"]
                puts, started = 0, time.monotonic()
                while time.monotonic() - started < seconds / 2:
                    dynamodb.put_item(TableName=settings.jobs_table, Item={
                        "job_id": {"S": f"job-{puts}"}, "patient_id": {"S": "bench"},
                        "created_at": {"S": "2026-01-01T00:00:00Z"}, "status": {"S": "queued"}})
                    puts += 1
                put_rate = puts / (time.monotonic() - started)
                rounds, started = 0, time.monotonic()
                while time.monotonic() - started < seconds / 2:
                    sqs.send_message(QueueUrl=queue, MessageBody="x")
                    for message in sqs.receive_message(QueueUrl=queue).get("Messages", []):
                        sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
                    rounds += 1
                rows.append({"durability": mode, "dynamodb_puts_per_second": round(put_rate, 1),
                             "sqs_round_trips_per_second": round(rounds / (time.monotonic() - started), 1)})
                print(json.dumps(rows[-1]), flush=True)
            finally:
                server.terminate()
                server.wait(10)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkins", type=int, default=16, help="measured check-ins per configuration")
    parser.add_argument("--in-flight", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each check-in clip")
    parser.add_argument("--only", choices=[c[0] for c in CONFIGURATIONS], action="append")
    parser.add_argument("--aws-only", action="store_true",
                        help="only the AWS server's request rates in each durability mode")
    parser.add_argument("--out", type=Path, default=Path("bench/results/throughput.json"))
    args = parser.parse_args()
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    if args.aws_only:
        report = {"aws_requests": aws_requests(), "load_average_at_end": os.getloadavg()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
        return
    clip = samples.checkin_video(samples.cache_dir() / "bench" / f"checkin_{args.seconds:.0f}s.mp4", seconds=args.seconds)
    rows = []
    with tempfile.TemporaryDirectory(prefix="schizodot-throughput-") as workdir:
        for label, durability, replicas in CONFIGURATIONS:
            if args.only and label not in args.only:
                continue
            print(f"{label}: {args.checkins} check-ins of {args.seconds:.0f} s, {args.in_flight} in flight", flush=True)
            rows.append(measure(label, durability, replicas, clip, args.seconds, args.checkins, args.in_flight,
                                Path(workdir)))
            print(json.dumps(rows[-1]), flush=True)
    report = {"clip_seconds": args.seconds, "rows": rows, "aws_requests": aws_requests(),
              "load_average_at_end": os.getloadavg()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"\n{'configuration':<20}{'check-ins/min':>14}{'media s/s':>11}{'machine CPU':>13}  bottleneck")
    for row in rows:
        print(f"{row['configuration']:<20}{row['checkins_per_minute']:>14}{row['media_seconds_per_wall_second']:>11}"
              f"{row['machine_cpu_busy']:>13.0%}  {row['bottleneck']}")
    print(f"\n{'AWS server':<20}{'DynamoDB puts/s':>16}{'SQS round trips/s':>19}")
    for row in report["aws_requests"]:
        print(f"{row['durability']:<20}{row['dynamodb_puts_per_second']:>16}{row['sqs_round_trips_per_second']:>19}")


if __name__ == "__main__":
    main()
