"""The embedded stack: a local AWS-API server (moto) and the five services as
supervised background processes, as Kubernetes would run them.

    python -m schizodot.stack up | down | status | env

`up` starts a detached supervisor that runs moto's server on 127.0.0.1,
creates the queues, tables and bucket (shared.infra, idempotent), starts the
services and restarts any that dies. State lives in `.stack/` (pids, logs, env).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from schizodot.dev_identity import DevIssuer
from shared.topology import STAGES

SERVICES = STAGES  # one process per stage
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STATE_DIR = Path(".stack")
DEFAULT_AWS_PORT = 4566
DEFAULT_API_PORT = 8080
DEFAULT_RESULTS_API_PORT = 8081
DEFAULT_METRICS_PORT = 9464  # OpenTelemetry's Prometheus port; services take 9464..9468


@dataclass
class StackConfig:
    state_dir: Path = DEFAULT_STATE_DIR
    aws_port: int = DEFAULT_AWS_PORT
    api_port: int = DEFAULT_API_PORT
    extra_env: dict[str, str] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)  # service -> /metrics port; none = off
    # One key for the whole stack, so a patient's log reference is the same in every service.
    pseudonym_key: str = field(default_factory=lambda: secrets.token_hex(16))
    results_api_port: int = DEFAULT_RESULTS_API_PORT

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.aws_port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def environment(self) -> dict[str, str]:
        """What a client or service needs to talk to this stack."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "INGEST_API_PORT": str(self.api_port),
            "SCHIZODOT_API_URL": self.api_url,
            "RESULTS_API_PORT": str(self.results_api_port),
            "SCHIZODOT_RESULTS_API_URL": f"http://127.0.0.1:{self.results_api_port}",
            "SCHIZODOT_STACK_STATE_DIR": str(self.state_dir.resolve()),  # the CLI mints dev tokens from it
            **DevIssuer(self.state_dir).environment(),  # issue 12: the development issuer's JWKS
            **self.extra_env,
        }

    def service_environment(self, service: str) -> dict[str, str]:
        """What one service process gets on top of `environment()`."""
        return {
            "SCHIZODOT_METRICS_PORT": str(self.metrics_ports.get(service, 0)),
            "SCHIZODOT_METRICS_HOST": "127.0.0.1",
            "SCHIZODOT_PSEUDONYM_KEY": self.pseudonym_key,
        }

    def use_in_this_process(self) -> None:
        """Point this process's AWS clients at the stack (variables already set win)."""
        for key, value in self.environment().items():
            os.environ.setdefault(key, value)

    def to_json(self) -> str:
        return json.dumps({"state_dir": str(self.state_dir.resolve()), "aws_port": self.aws_port,
                           "api_port": self.api_port, "extra_env": self.extra_env,
                           "metrics_ports": self.metrics_ports, "pseudonym_key": self.pseudonym_key,
                           "results_api_port": self.results_api_port})

    @classmethod
    def from_json(cls, text: str) -> "StackConfig":
        data = json.loads(text)
        config = cls(Path(data["state_dir"]), data["aws_port"], data["api_port"], data["extra_env"],
                     data.get("metrics_ports", {}))
        for name in ("pseudonym_key", "results_api_port"):
            if data.get(name):
                setattr(config, name, data[name])
        return config


# --- the supervisor process -------------------------------------------------


class Supervisor:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.logs = config.state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.children: dict[str, subprocess.Popen] = {}
        self.restarts: dict[str, int] = {name: 0 for name in ("aws", *SERVICES)}
        self.stopping = False

    def _env(self, name: str) -> dict[str, str]:
        env = {**os.environ, **self.config.environment(), "PYTHONUNBUFFERED": "1"}
        if name in SERVICES:
            env.update(self.config.service_environment(name))
            env.update(self.config.extra_env)  # a test's explicit setting wins
        env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    def _command(self, name: str) -> list[str]:
        if name == "aws":
            return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.config.aws_port)]
        return [sys.executable, "-m", f"services.{name}.main"]

    def _start(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        self.children[name] = subprocess.Popen(
            self._command(name), stdout=log, stderr=subprocess.STDOUT, env=self._env(name), cwd=REPO_ROOT
        )
        self._write_pids()

    def _write_pids(self) -> None:
        state = {name: {"pid": child.pid, "restarts": self.restarts[name]} for name, child in self.children.items()}
        state["supervisor"] = {"pid": os.getpid(), "restarts": 0}
        partial = self.config.state_dir / "pids.json.partial"
        partial.write_text(json.dumps(state))
        os.replace(partial, self.config.state_dir / "pids.json")  # readers never see half a file

    def _provision(self) -> None:
        from shared.infra import ensure_infrastructure
        from shared.settings import CommonSettings

        os.environ.update(self.config.environment())
        ensure_infrastructure(CommonSettings())

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        self._start("aws")
        wait_for_port(self.config.aws_port, 30)
        self._provision()
        for name in SERVICES:
            self._start(name)
        (self.config.state_dir / "ready").write_text("ok")
        backoff: dict[str, float] = {}
        while not self.stopping:
            time.sleep(0.5)
            for name, child in list(self.children.items()):
                if child.poll() is None or self.stopping:
                    continue
                # Restart with back-off, as a Deployment would; a fresh AWS
                # server has lost its state, so provision it again.
                if time.monotonic() < backoff.get(name, 0):
                    continue
                self.restarts[name] += 1
                print(f"{name} exited with {child.returncode}; restarting (restart {self.restarts[name]})", flush=True)
                self._start(name)
                if name == "aws":
                    wait_for_port(self.config.aws_port, 30)
                    self._provision()
                backoff[name] = time.monotonic() + min(2 ** min(self.restarts[name], 5), 30)
        self._shutdown()

    def _shutdown(self) -> None:
        for name in SERVICES:  # services first, so they can still reach AWS while draining
            if name in self.children and self.children[name].poll() is None:
                self.children[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for name in SERVICES:
            child = self.children.get(name)
            if child is not None:
                try:
                    child.wait(timeout=max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    child.kill()
        aws = self.children.get("aws")
        if aws is not None:
            aws.terminate()
            try:
                aws.wait(timeout=10)
            except subprocess.TimeoutExpired:
                aws.kill()
        for name in ("pids.json", "ready", "env", "config.json"):
            (self.config.state_dir / name).unlink(missing_ok=True)


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


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
    (config.state_dir / "config.json").write_text(config.to_json())
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
    print(f"stack up: AWS API {config.endpoint}, ingest API {config.api_url}, logs in {config.state_dir / 'logs'}")


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


def status(config: StackConfig) -> int:
    if not is_running(config):
        print("stack not running (start it with `make up`)")
        return 1
    print(f"{'process':<12}{'pid':>8}  {'state':<8}{'restarts':>9}")
    for name, info in _pids(config).items():
        state = "running" if _alive(info["pid"]) else "dead"
        print(f"{name:<12}{info['pid']:>8}  {state:<8}{info['restarts']:>9}")
    config.use_in_this_process()
    from shared.aws import sync_client
    from shared.settings import CommonSettings

    settings = CommonSettings()
    sqs = sync_client(settings, "sqs")
    print(f"\n{'queue':<24}{'waiting':>8}{'in flight':>10}{'dead letters':>14}")
    for stage in SERVICES:
        depth = _depth(sqs, settings.queue_name(stage))
        dead = _depth(sqs, settings.dead_letter_queue_name(stage))
        print(f"{settings.queue_name(stage):<24}{depth[0]:>8}{depth[1]:>10}{dead[0]:>14}")
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
    # SCHIZODOT_STACK_METRICS_PORT: first of five consecutive /metrics ports; 0 = none.
    metrics_base = int(os.environ.get("SCHIZODOT_STACK_METRICS_PORT", DEFAULT_METRICS_PORT))
    return StackConfig(
        state_dir=state_dir,
        aws_port=int(os.environ.get("SCHIZODOT_STACK_AWS_PORT", DEFAULT_AWS_PORT)),
        api_port=int(os.environ.get("INGEST_API_PORT", DEFAULT_API_PORT)),
        results_api_port=int(os.environ.get("RESULTS_API_PORT", DEFAULT_RESULTS_API_PORT)),
        metrics_ports={name: metrics_base + i for i, name in enumerate(SERVICES)} if metrics_base else {},
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["up", "down", "status", "env", "supervise"])
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
    elif args.command == "status":
        return status(config)
    elif args.command == "env":
        print("".join(f"export {k}={v}\n" for k, v in config.environment().items()), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
