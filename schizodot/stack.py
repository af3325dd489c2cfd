"""The embedded stack: a local AWS-API server (moto, its state kept on disk) and
the five services as supervised background processes, as Kubernetes would run them.

    python -m schizodot.stack up | down | status | env | reset

`up` starts a detached supervisor that runs the AWS server on 127.0.0.1
(local_aws: moto with its state in `.stack-data/`), creates the
queues, tables and bucket (shared.runtime.infra, idempotent), starts N processes per
stage (SCHIZODOT_STACK_REPLICAS, e.g. `vision=2,audio=2`) and restarts any that
dies. The supervisor owns the ingest and results API sockets and hands them to
every process of those stages, so the APIs keep answering while one restarts.
Run state lives in `.stack/` (pids, logs, env); `reset` deletes the stored data.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from schizodot.dev_identity import DevIssuer
from schizodot.supervisor import REPO_ROOT, SERVICES, Supervisor, wait_for_port  # noqa: F401 - the benches and tests start servers with it

DEFAULT_STATE_DIR = Path(".stack")
DEFAULT_AWS_PORT = 4566
DEFAULT_API_PORT = 8080
DEFAULT_RESULTS_API_PORT = 8081
DEFAULT_METRICS_PORT = 9464  # OpenTelemetry's Prometheus port; services take 9464..9468
DEFAULT_DATA_DIR = Path(".stack-data")
AWS_ACCESS_KEY = "schizodot-local"  # the embedded AWS server's one access key (its secret is per stack)
AWS_SECRET_VARIABLE = "SCHIZODOT_STACK_AWS_SECRET_KEY"
# fsync: every acknowledged change is on disk (survives power loss); process:
# survives the AWS server's crash, not the machine's; memory: moto as it comes.
DURABILITY_MODES = ("fsync", "process", "memory")
SESSION_COOKIE = "schizodot_session"  # the console's sign-in cookie (SCHIZODOT_AUTH_SESSION_COOKIE)


def parse_replicas(text: str) -> dict[str, int]:
    """`vision=2,audio=2` -> {"vision": 2, "audio": 2}; a readable error otherwise."""
    replicas: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, count = part.partition("=")
        name = name.strip()
        if name not in SERVICES or not count.strip().isdigit() or not 1 <= int(count) <= 16:
            raise ValueError(f"REPLICAS: {part!r} must be <stage>=<1..16> with a stage among {', '.join(SERVICES)}")
        replicas[name] = int(count)
    return replicas


@dataclass
class StackConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    aws_port: int = DEFAULT_AWS_PORT
    api_port: int = DEFAULT_API_PORT
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)  # service -> /metrics port; none = off
    # One key for the whole stack, so a patient's log reference is the same in every service; kept
    # with the stored data (`load_stack_secrets`), so the audit trail's references stay comparable.
    pseudonym_key: str = field(default_factory=lambda: secrets.token_hex(16))
    console_csrf_key: str = field(default_factory=lambda: secrets.token_hex(32))  # the console's form tokens
    results_api_port: int = DEFAULT_RESULTS_API_PORT
    replicas: dict[str, int] = field(default_factory=dict)  # stage -> processes; 1 where absent
    data_dir: Path | None = None  # where the AWS server keeps its state; None: <state_dir>/aws-data
    durability: str = "fsync"
    # The AWS server answers only requests signed with this secret (local_aws.guard.AccessGuard);
    # a new one per `up` unless SCHIZODOT_STACK_AWS_SECRET_KEY names one (the tests do).
    aws_secret_key: str = field(default_factory=lambda: os.environ.get(AWS_SECRET_VARIABLE) or secrets.token_hex(20))

    @property
    def aws_data_dir(self) -> Path:
        return self.data_dir if self.data_dir is not None else self.state_dir / "aws-data"

    def processes(self, service: str) -> list[str]:
        """The process names of one stage: `vision`, `vision-2`, ..."""
        return [service if index == 1 else f"{service}-{index}" for index in range(1, self.replicas.get(service, 1) + 1)]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def results_url(self) -> str:
        return f"http://127.0.0.1:{self.results_api_port}"

    @property
    def console_url(self) -> str:
        return f"{self.results_url}/console"

    def environment(self) -> dict[str, str]:
        """What a client or service needs to talk to this stack."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.aws_secret_key,
            "AWS_REGION": "us-east-1",
            "INGEST_API_PORT": str(self.api_port),
            "SCHIZODOT_API_URL": self.api_url,
            "RESULTS_API_PORT": str(self.results_api_port),
            "SCHIZODOT_RESULTS_API_URL": f"http://127.0.0.1:{self.results_api_port}",
            "SCHIZODOT_STACK_STATE_DIR": str(self.state_dir.resolve()),  # the CLI mints dev tokens from it
            **DevIssuer(self.state_dir).environment(),  # issue 12: the development issuer's JWKS
            # The patient page and the clinician console (issue 13): where links point, the console's
            # address in alerts, and browsers signing in to the console with a cookie.
            "INGEST_PATIENT_PAGE_URL": f"{self.api_url}/checkin",
            "RESULTS_CONSOLE_URL": self.console_url,
            "SCHIZODOT_AUTH_SESSION_COOKIE": SESSION_COOKIE,
            "SCHIZODOT_AUTH_COOKIE_PATHS": "/console",
            "SCHIZODOT_EMBEDDED_STACK": "true",  # loopback, one machine: plain http:// webhooks allowed
            # the one browser origin the AWS server (and the bucket's CORS rule) lets in: the patient page
            "SCHIZODOT_BROWSER_ORIGINS": self.api_url,
            **self.extra_env,
        }

    def service_environment(self, service: str) -> dict[str, str]:
        """What one service process gets on top of `environment()`."""
        return {
            "SCHIZODOT_METRICS_PORT": str(self.metrics_ports.get(service, 0)),
            "SCHIZODOT_METRICS_HOST": "127.0.0.1",
            "SCHIZODOT_PSEUDONYM_KEY": self.pseudonym_key,
            "RESULTS_CONSOLE_CSRF_KEY": self.console_csrf_key,
        }

    def use_in_this_process(self) -> None:
        """Point this process's AWS clients at the stack (variables already set win, but for the
        credentials: the stack's AWS server accepts its own only)."""
        for key, value in self.environment().items():
            if key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                os.environ[key] = value
            else:
                os.environ.setdefault(key, value)

    def to_json(self) -> str:
        return json.dumps({"state_dir": str(self.state_dir.resolve()), "aws_port": self.aws_port,
                           "api_port": self.api_port, "extra_env": self.extra_env,
                           "metrics_ports": self.metrics_ports, "pseudonym_key": self.pseudonym_key,
                           "console_csrf_key": self.console_csrf_key,
                           "results_api_port": self.results_api_port,
                           "replicas": self.replicas, "data_dir": str(self.aws_data_dir.resolve()),
                           "durability": self.durability, "aws_secret_key": self.aws_secret_key})

    @classmethod
    def from_json(cls, text: str) -> "StackConfig":
        data = json.loads(text)
        config = cls(Path(data["state_dir"]), data["aws_port"], data["api_port"], data["extra_env"],
                     data.get("metrics_ports", {}))
        for name in ("pseudonym_key", "console_csrf_key", "results_api_port", "replicas", "durability",
                     "aws_secret_key"):
            if data.get(name):
                setattr(config, name, data[name])
        if data.get("data_dir"):
            config.data_dir = Path(data["data_dir"])
        return config


SECRETS_FILE = "stack-secrets.json"


def load_stack_secrets(config: StackConfig) -> None:
    """The stack's pseudonym and CSRF keys, kept beside its stored data (`<data dir>/stack-secrets.json`,
    0600, the folder 0700): a patient's `patient_ref` in the audit trail stays the same across `up`s,
    as long as the data does (`reset` deletes both). With data in memory only, fresh keys each time."""
    if config.durability == "memory":
        return
    folder = config.aws_data_dir
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / SECRETS_FILE
    if not path.exists():
        data = json.dumps({"pseudonym_key": config.pseudonym_key, "console_csrf_key": config.console_csrf_key})
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as file:
            file.write(data)
    stored = json.loads(path.read_text())
    config.pseudonym_key = stored["pseudonym_key"]
    config.console_csrf_key = stored.get("console_csrf_key") or config.console_csrf_key


# --- commands ----------------------------------------------------------------


def _pids(config: StackConfig) -> dict:
    path = config.state_dir / "pids.json"
    return json.loads(path.read_text()) if path.exists() else {}


def _alive(pid: int) -> bool:
    try:
        # A supervisor this process started stays a zombie (and answers kill 0) until reaped.
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass  # not our child
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def is_running(config: StackConfig) -> bool:
    supervisor = _pids(config).get("supervisor")
    return bool(supervisor and _alive(supervisor["pid"]))


def up(config: StackConfig, timeout: float = 180) -> None:
    config.state_dir.mkdir(parents=True, exist_ok=True)
    if is_running(config):
        print(f"stack already running (AWS API {config.endpoint}, ingest API {config.api_url})")
        return
    for port in (config.aws_port, config.api_port, config.results_api_port):
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                raise SystemExit(f"port {port} is in use: stop what listens there or choose another port")
    (config.state_dir / "ready").unlink(missing_ok=True)
    load_stack_secrets(config)
    saved = config.state_dir / "config.json"
    saved.touch(mode=0o600)  # it holds the keys
    saved.write_text(config.to_json())
    (config.state_dir / "logs").mkdir(exist_ok=True)
    log = open(config.state_dir / "logs" / "supervisor.log", "ab")
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "schizodot.stack", "supervise", "--state-dir", str(config.state_dir.resolve())],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=REPO_ROOT,
    )
    deadline = time.monotonic() + timeout
    while not (config.state_dir / "ready").exists():
        if supervisor.poll() is not None:
            raise SystemExit(f"the stack failed to start; see {config.state_dir / 'logs' / 'supervisor.log'}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the stack did not start within {timeout:.0f} s; see {config.state_dir / 'logs'}")
        time.sleep(0.2)
    _wait_healthy(config, deadline)
    (config.state_dir / "env").write_text(
        "".join(f"export {k}={v}\n" for k, v in config.environment().items())
    )
    replicas = ", ".join(f"{service}x{config.replicas[service]}" for service in SERVICES if config.replicas.get(service, 1) > 1)
    stored = "in memory only" if config.durability == "memory" else f"kept in {config.aws_data_dir}"
    print(f"stack up: AWS API {config.endpoint} (data {stored}), ingest API {config.api_url}"
          f"{', replicas ' + replicas if replicas else ''}, logs in {config.state_dir / 'logs'}")


def _wait_healthy(config: StackConfig, deadline: float) -> None:
    """The ingest API answers once its worker has connected; any service that
    keeps exiting (a missing model, say) is reported with its log's last lines."""
    while time.monotonic() < deadline:
        crashed = {name: info for name, info in _pids(config).items() if info.get("restarts", 0) >= 2}
        if crashed:
            name = next(iter(crashed))
            tail = (config.state_dir / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-5:]
            down(config)
            raise SystemExit(f"service {name} keeps exiting:\n" + "\n".join(tail))
        try:
            with urllib.request.urlopen(f"{config.api_url}/health", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"the ingest API did not become healthy; see {config.state_dir / 'logs'}")


def down(config: StackConfig) -> None:
    supervisor = _pids(config).get("supervisor")
    if not supervisor or not _alive(supervisor["pid"]):
        print("stack not running")
        return
    os.kill(supervisor["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 60
    while _alive(supervisor["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    print("stack stopped")


def reset(config: StackConfig) -> None:
    """Delete the AWS server's stored data (tables, bucket, queues): the next `up` starts empty."""
    if is_running(config):
        down(config)
    target = config.aws_data_dir
    if target.exists():
        shutil.rmtree(target)
        print(f"deleted the stored AWS data in {target} (jobs, results, media, queued messages)")
    else:
        print(f"no stored AWS data in {target}")


def status(config: StackConfig) -> int:
    if not is_running(config):
        print("stack not running (start it with `make up`)")
        return 1
    print(f"{'process':<12}{'pid':>8}  {'state':<8}{'restarts':>9}")
    for name, info in _pids(config).items():
        state = "running" if _alive(info["pid"]) else "dead"
        print(f"{name:<12}{info['pid']:>8}  {state:<8}{info['restarts']:>9}")
    print(f"\nAWS data: {'in memory only' if config.durability == 'memory' else config.aws_data_dir}")
    config.use_in_this_process()
    from botocore.exceptions import BotoCoreError, ClientError

    from shared.aws.clients import sync_client
    from shared.settings import CommonSettings

    settings = CommonSettings()
    sqs = sync_client(settings, "sqs")
    print(f"\n{'queue':<24}{'waiting':>8}{'in flight':>10}{'dead letters':>14}")
    try:
        for stage in SERVICES:
            depth = _depth(sqs, settings.queue_name(stage))
            dead = _depth(sqs, settings.dead_letter_queue_name(stage))
            print(f"{settings.queue_name(stage):<24}{depth[0]:>8}{depth[1]:>10}{dead[0]:>14}")
    except (BotoCoreError, ClientError) as error:  # restarting, say: a line, not a traceback
        print(f"(the AWS API did not answer: {type(error).__name__}; it may be restarting)")
    if config.metrics_ports:
        print("\nmetrics: " + ", ".join(f"{name} http://127.0.0.1:{port}/metrics"
                                       for name, port in config.metrics_ports.items()))
    return 0


def _depth(sqs, name: str) -> tuple[int, int]:
    url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])


def config_from_env(state_dir: Path = DEFAULT_STATE_DIR) -> StackConfig:
    """The stack `make up` starts. SCHIZODOT_STACK_METRICS_PORT: first of five
    consecutive /metrics ports (further replicas take the next ones); 0 = none.
    SCHIZODOT_STACK_REPLICAS: processes per stage, `vision=2,audio=2`.
    SCHIZODOT_STACK_DATA_DIR: where the AWS server keeps its state (default
    .stack-data/, or <state dir>/aws-data for another state dir).
    SCHIZODOT_STACK_AWS_DURABILITY: fsync (default), process or memory."""
    metrics_base = int(os.environ.get("SCHIZODOT_STACK_METRICS_PORT", DEFAULT_METRICS_PORT))
    durability = os.environ.get("SCHIZODOT_STACK_AWS_DURABILITY", "fsync").strip() or "fsync"
    if durability not in DURABILITY_MODES:
        raise SystemExit(f"SCHIZODOT_STACK_AWS_DURABILITY={durability!r} must be one of {', '.join(DURABILITY_MODES)}")
    try:
        replicas = parse_replicas(os.environ.get("SCHIZODOT_STACK_REPLICAS", ""))
    except ValueError as error:
        raise SystemExit(str(error)) from None
    data_dir = os.environ.get("SCHIZODOT_STACK_DATA_DIR")
    return StackConfig(
        state_dir=state_dir,
        aws_port=int(os.environ.get("SCHIZODOT_STACK_AWS_PORT", DEFAULT_AWS_PORT)),
        api_port=int(os.environ.get("INGEST_API_PORT", DEFAULT_API_PORT)),
        results_api_port=int(os.environ.get("RESULTS_API_PORT", DEFAULT_RESULTS_API_PORT)),
        metrics_ports={name: metrics_base + i for i, name in enumerate(SERVICES)} if metrics_base else {},
        replicas=replicas,
        data_dir=Path(data_dir) if data_dir else (DEFAULT_DATA_DIR if state_dir == DEFAULT_STATE_DIR else None),
        durability=durability,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env", "reset", "supervise"])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)
    args = parser.parse_args(argv)
    if args.command == "supervise":
        config = StackConfig.from_json((args.state_dir / "config.json").read_text())
        Supervisor(config).run()
        return 0
    saved = args.state_dir / "config.json"
    config = StackConfig.from_json(saved.read_text()) if saved.exists() else config_from_env(args.state_dir)
    if args.command == "up":
        up(config_from_env(args.state_dir) if not is_running(config) else config)
    elif args.command == "down":
        down(config)
    elif args.command == "reset":
        reset(config if is_running(config) else config_from_env(args.state_dir))
    elif args.command == "status":
        return status(config)
    elif args.command == "env":
        print("".join(f"export {k}={v}\n" for k, v in config.environment().items()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
