"""The load and chaos run: N real check-ins through the embedded stack while
workers and the AWS server are SIGKILLed at random and a fault proxy throttles,
fails, delays and drops a few percent of all AWS requests.

    make chaos                                   # 200 check-ins, 12 in flight
    python -m tests.faults.chaos --checkins 40 --in-flight 8

Clients are real `schizodot submit` processes, authenticated as the embedded
stack's development uploader (tokens signed by its issuer). Clips are made here: short
videos with a face and speech, audio-only recordings and silent videos. At the
end it checks, reading the AWS server directly (not through the proxy):
every job completed, one SchizodotUsers item per job, no dead letters that are
not explained bad input (every check-in sent is valid: so none at all), no job left processing, progress never went down in
what any client saw, no client crashed (a non-zero exit or a traceback).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schizodot import samples, stack
from schizodot.dev_identity import DEV_CLINIC
from shared.aws.clients import sync_client
from shared.aws.dynamo import from_item
from shared.identity.principal import patient_key
from shared.runtime.infra import PATIENT_JOBS_INDEX
from shared.runtime.topology import STAGES
from shared.settings import CommonSettings
from tests.faults.proxy import FaultProxy, FaultRates

KINDS = ("aws", *stack.SERVICES)  # what the chaos monkey kills
DEFAULT_RATES = FaultRates(throttle=0.02, server_error=0.01, drop_before=0.01, drop_after=0.005, latency=0.03,
                           latency_seconds=(0.05, 0.3))
_PROGRESS = re.compile(r"progress\s+(\d+)%")


@dataclass
class ClientRun:
    index: int
    patient: str
    clip: str
    returncode: int = -1
    job_id: str | None = None
    progress: list[int] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""
    traceback: bool = False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_clips(folder: Path, seconds: float) -> list[tuple[str, Path]]:
    """Three kinds of real check-in, made with ffmpeg and espeak-ng."""
    folder.mkdir(parents=True, exist_ok=True)
    text = "Good morning. I slept well and I took my tablet with water."
    return [
        ("video", samples.checkin_video(folder / "video.mp4", seconds=seconds, text=text, width=480, height=360)),
        ("audio-only", samples.checkin_video(folder / "audio.m4a", seconds=seconds, text=text, with_video=False)),
        ("silent-video", samples.checkin_video(folder / "silent.mp4", seconds=seconds, with_audio=False,
                                               width=480, height=360)),
    ]


def _age(pid: int) -> float:
    """Seconds since the process started (0 when it is gone)."""
    try:
        started = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        booted = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, IndexError, ValueError):
        return 0.0
    return booted - started / os.sysconf("SC_CLK_TCK")


class ChaosMonkey(threading.Thread):
    """SIGKILLs one running process every few seconds: first each kind once (in
    random order), then any kind at random."""

    def __init__(self, config: stack.StackConfig, interval: tuple[float, float], rng: random.Random,
                 min_age: float = 15.0) -> None:
        super().__init__(name="chaos-monkey", daemon=True)
        self.min_age = min_age
        self.config = config
        self.interval = interval
        self.rng = rng
        self.stop = threading.Event()
        self.covered = threading.Event()  # every kind has been killed once
        self.kills: list[tuple[float, str]] = []

    def run(self) -> None:
        plan = list(KINDS)
        self.rng.shuffle(plan)
        while not self.stop.wait(self.rng.uniform(*self.interval)):
            kind = plan[0] if plan else self.rng.choice(KINDS)
            pids = json.loads((self.config.state_dir / "pids.json").read_text())
            # A running process, not one still starting after the last kill: that would test only the back-off.
            victims = [name for name in pids if stack.Supervisor.service_of(name) == kind
                       and _age(pids[name]["pid"]) >= self.min_age]
            if not victims:
                continue
            name = self.rng.choice(victims)
            try:
                os.kill(pids[name]["pid"], signal.SIGKILL)
                self.kills.append((time.monotonic(), name))
            except ProcessLookupError:
                continue  # it was restarting: that kind is still to kill
            if plan and plan[0] == kind:
                plan.pop(0)
            if not plan:
                self.covered.set()


_CLIENTS: set[subprocess.Popen] = set()  # running clients, stopped if the run is interrupted


def submit(run: ClientRun, env: dict[str, str], timeout: float) -> ClientRun:
    started = time.monotonic()
    client = subprocess.Popen(
        [sys.executable, "-m", "schizodot.cli", "--retry-deadline", "300", "submit", run.clip,
         "--patient-id", run.patient, "--json", "--timeout", str(timeout)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    _CLIENTS.add(client)
    try:
        _, stderr = client.communicate(timeout=timeout + 360)
    except subprocess.TimeoutExpired:
        client.kill()
        run.error = "the client itself hung"
        return run
    finally:
        _CLIENTS.discard(client)
    run.seconds = time.monotonic() - started
    run.returncode = client.returncode
    run.traceback = "Traceback (most recent call last)" in stderr
    run.progress = [int(value) for value in _PROGRESS.findall(stderr)]
    created = re.search(r"job (job-[0-9a-f]{32}) created", stderr)
    run.job_id = created.group(1) if created else None
    if client.returncode != 0 or run.traceback:
        run.error = stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {client.returncode}"
    return run


def _all_pages(call, **request) -> list[dict]:
    items: list[dict] = []
    while True:
        response = call(**request)
        items += response.get("Items", [])
        if "LastEvaluatedKey" not in response:
            return items
        request["ExclusiveStartKey"] = response["LastEvaluatedKey"]


def verify(settings: CommonSettings, runs: list[ClientRun], patients: list[str]) -> dict[str, Any]:
    """The figures, read from the AWS server itself. The clients submit as the development
    clinic's uploader, so each patient is stored under that clinic's patient key."""
    dynamodb = sync_client(settings, "dynamodb")
    sqs = sync_client(settings, "sqs")
    jobs: list[dict[str, Any]] = []
    users: list[dict[str, Any]] = []
    for patient in (patient_key(DEV_CLINIC, patient) for patient in patients):
        jobs += [from_item(i) for i in _all_pages(
            dynamodb.query, TableName=settings.jobs_table, IndexName=PATIENT_JOBS_INDEX,
            KeyConditionExpression="patient_id = :p", ExpressionAttributeValues={":p": {"S": patient}})]
        users += [from_item(i) for i in _all_pages(
            dynamodb.query, TableName=settings.users_table, KeyConditionExpression="user_id = :u",
            ExpressionAttributeValues={":u": {"S": patient}}, ConsistentRead=True)]
    submitted = {run.job_id for run in runs if run.job_id}
    by_status = collections.Counter(job["status"] for job in jobs if job["job_id"] in submitted)
    per_job = collections.Counter(item["job_id"] for item in users)
    dead: list[dict[str, str]] = []
    for stage in STAGES:
        url = sqs.get_queue_url(QueueName=settings.dead_letter_queue_name(stage))["QueueUrl"]
        for _ in range(50):
            messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
                                           VisibilityTimeout=300).get("Messages", [])
            if not messages:
                break
            for message in messages:
                reason = message.get("MessageAttributes", {}).get("schizodot_error", {}).get("StringValue", "")
                dead.append({"queue": stage, "reason": reason[:300], "body": message["Body"][:200]})
    failed = [f"{job['job_id']}: {job.get('error')}" for job in jobs
              if job["job_id"] in submitted and job["status"] == "failed"]
    return {
        "checkins": len(runs),
        "jobs_created": len(submitted),
        "jobs_completed": by_status.get("completed", 0),
        "jobs_failed": by_status.get("failed", 0),
        "jobs_left_processing": by_status.get("processing", 0) + by_status.get("queued", 0),
        "orphan_jobs": sorted(job["job_id"] for job in jobs if job["job_id"] not in submitted),
        "users_items": len(users),
        "jobs_with_exactly_one_users_item": sum(1 for job_id in submitted if per_job.get(job_id) == 1),
        "jobs_with_duplicate_users_items": sorted(j for j, n in per_job.items() if n > 1),
        "dead_letters": len(dead),
        # Every check-in sent here is valid media: no dead letter has bad input to explain it.
        "dead_letters_unexplained": dead,
        "progress_not_monotonic": [run.job_id for run in runs if run.progress != sorted(run.progress)],
        "client_crashes": [f"#{run.index} {run.patient}: exit {run.returncode}: {run.error}" for run in runs
                           if run.returncode != 0 or run.traceback],
        "failed_jobs": failed,
    }


def passed(figures: dict[str, Any]) -> bool:
    n = figures["checkins"]
    return (figures["jobs_completed"] == n and figures["users_items"] == n
            and figures["jobs_with_exactly_one_users_item"] == n and not figures["dead_letters_unexplained"]
            and figures["jobs_left_processing"] == 0 and not figures["progress_not_monotonic"]
            and not figures["client_crashes"])


def _warnings(logs: Path) -> dict[str, int]:
    """How often each warning or error event was logged, over all services."""
    counts: collections.Counter[str] = collections.Counter()
    for path in logs.glob("*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("level") in ("warning", "error", "critical"):
                counts[f"{path.stem.rsplit('-', 1)[0] if path.stem[-1].isdigit() else path.stem}: {entry.get('event')}"] += 1
    return dict(counts.most_common(25))


def _restores(log: Path) -> list[str]:
    """What the AWS server put back at each start, and how long it took."""
    return [line.split(" INFO ", 1)[1] for line in log.read_text(errors="replace").splitlines()
            if "local_aws INFO restored" in line] if log.exists() else []


def run_chaos(checkins: int = 40, in_flight: int = 8, *, workdir: Path | None = None, seed: int | None = None,
              kill_interval: tuple[float, float] = (8.0, 16.0), rates: FaultRates = DEFAULT_RATES,
              replicas: dict[str, int] | None = None, clip_seconds: float = 3.0, patients: int = 10,
              job_timeout: float = 900) -> dict[str, Any]:
    seed = seed if seed is not None else random.randrange(2 ** 31)
    rng = random.Random(seed)
    workdir = Path(workdir or tempfile.mkdtemp(prefix="schizodot-chaos-"))
    clips = make_clips(workdir / "clips", clip_seconds)
    config = stack.StackConfig(state_dir=workdir / "stack", aws_port=free_port(), api_port=free_port(),
                               results_api_port=free_port(), replicas=replicas or {"ingest": 2, "results": 2})
    proxy = FaultProxy(("127.0.0.1", config.aws_port), FaultRates(), seed=seed).start()
    config.extra_env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}",  # services and clients go through the faults
        "SCHIZODOT_VISIBILITY_TIMEOUT_SECONDS": "10",
        "SCHIZODOT_RETRY_BACKOFF_SECONDS": "1",
        "SCHIZODOT_SHUTDOWN_GRACE_SECONDS": "10",
    }
    run_id = uuid.uuid4().hex[:6]
    patient_ids = [f"chaos-{run_id}-{index:02d}" for index in range(patients)]
    runs = [ClientRun(i, patient_ids[i % patients], str(clips[rng.choice((0, 0, 1, 2))][1])) for i in range(checkins)]
    env = {**os.environ, **config.environment(), "PYTHONPATH": str(stack.REPO_ROOT)}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # the stack's AWS server takes its own key only
        os.environ[key] = config.environment()[key]
    direct = CommonSettings(aws_endpoint_url=config.endpoint, aws_region="us-east-1")
    monkey = ChaosMonkey(config, kill_interval, rng)
    started = time.monotonic()
    print(f"chaos run {run_id}: {checkins} check-ins, {in_flight} in flight, seed {seed}, workdir {workdir}", flush=True)
    stack.up(config, timeout=300)
    interrupted = signal.getsignal(signal.SIGINT)
    try:
        proxy.set_rates(rates)
        monkey.start()
        # Ctrl-C: no new clients, the running ones stopped, then the stack is taken down below.
        signal.signal(signal.SIGINT, lambda *_: (monkey.stop.set(), [c.kill() for c in list(_CLIENTS)]))
        began = time.monotonic()
        finished = 0
        # On a fast machine the check-ins could all be done before the monkey has killed every kind once:
        # the last `in_flight` wait for that, so every kind dies while check-ins are still to come.
        held_back = set(range(max(0, checkins - in_flight), checkins))

        def client(run: ClientRun) -> ClientRun:
            if run.index in held_back:
                monkey.covered.wait(timeout=len(KINDS) * (kill_interval[1] + monkey.min_age))
            return submit(run, env, job_timeout) if not monkey.stop.is_set() else run

        with ThreadPoolExecutor(max_workers=in_flight) as pool:
            for run in pool.map(client, runs):
                finished += 1
                if finished % 10 == 0 or run.returncode != 0:
                    print(f"  {finished}/{checkins} clients done ({time.monotonic() - began:.0f} s)"
                          + (f"; #{run.index} exit {run.returncode}: {run.error}" if run.returncode else ""), flush=True)
        wall = time.monotonic() - began
        monkey.stop.set()
        monkey.join(5)
        proxy.set_rates(FaultRates())
        figures = verify(direct, runs, patient_ids)
        restarts = {name: info["restarts"] for name, info in
                    json.loads((config.state_dir / "pids.json").read_text()).items() if info["restarts"]}
    finally:
        signal.signal(signal.SIGINT, interrupted)
        monkey.stop.set()
        for client in list(_CLIENTS):  # only if interrupted: normally every client has finished
            client.kill()
        stack.down(config)
        proxy.stop()
    killed = collections.Counter(stack.Supervisor.service_of(name) for _, name in monkey.kills)
    media_seconds = sum(clip_seconds for _ in runs)
    figures.update({
        "seed": seed, "in_flight": in_flight, "replicas": config.replicas, "wall_seconds": round(wall, 1),
        "checkins_per_minute": round(checkins / wall * 60, 1),
        "media_seconds_per_wall_second": round(media_seconds / wall, 2),
        "client_seconds_median": round(sorted(r.seconds for r in runs)[len(runs) // 2], 1),
        "kills": dict(killed), "restarts": restarts, "faults_injected": proxy.summary(),
        "answers_dropped_after_the_server_acted": dict(proxy.dropped_answers.most_common()),
        "clip_mix": dict(collections.Counter(Path(r.clip).stem for r in runs)),
        "warnings_logged": _warnings(config.state_dir / "logs"),
        "aws_restores": _restores(config.state_dir / "logs" / "aws.log"),
        "total_seconds": round(time.monotonic() - started, 1), "passed": None,
    })
    figures["passed"] = passed(figures)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkins", type=int, default=200)
    parser.add_argument("--in-flight", type=int, default=12)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--replicas", default="ingest=2,results=2", help="processes per stage, e.g. vision=2,audio=2")
    parser.add_argument("--fault-rate", type=float, default=None,
                        help="one rate for every fault kind (default: throttle 2%%, 5xx 1%%, drops 1%% + 0.5%%, latency 3%%)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/chaos.json"))
    args = parser.parse_args()
    rates = FaultRates.uniform(args.fault_rate, latency_seconds=(0.05, 0.3)) if args.fault_rate is not None \
        else DEFAULT_RATES
    figures = run_chaos(args.checkins, args.in_flight, seed=args.seed, rates=rates,
                        replicas=stack.parse_replicas(args.replicas))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures, indent=2))
    print(("PASSED" if figures["passed"] else "FAILED") + f": {figures['jobs_completed']}/{figures['checkins']} "
          f"completed, {figures['users_items']} SchizodotUsers items, {figures['dead_letters']} dead letters, "
          f"{figures['jobs_left_processing']} left processing, {len(figures['client_crashes'])} client crashes")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
