"""The embedded stack's supervisor process (`python -m schizodot.stack up` starts it detached): it runs
the local AWS server and N processes per stage, holds the ingest and results API sockets every process
of those stages accepts on, and restarts any child that dies, backing off when one keeps crashing."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from shared.runtime.http import LISTEN_FD_VARIABLE  # the API socket a process inherits
from shared.runtime.topology import STAGES

if TYPE_CHECKING:
    from schizodot.stack import StackConfig

SERVICES = STAGES  # one process per stage
REPO_ROOT = Path(__file__).resolve().parents[1]
API_STAGES = {"ingest": "api_port", "results": "results_api_port"}  # stages that serve HTTP, and their port


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")



class Supervisor:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.logs = config.state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.names = ["aws"] + [name for service in SERVICES for name in config.processes(service)]
        self.children: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {name: 0 for name in self.names}
        self.quick_exits: dict[str, int] = {name: 0 for name in self.names}
        self.sockets: dict[str, socket.socket] = {}
        self.stopping = False

    @staticmethod
    def service_of(name: str) -> str:
        return name.rsplit("-", 1)[0] if name[-1].isdigit() and "-" in name else name

    def _metrics_port(self, name: str) -> int:
        service = self.service_of(name)
        if not self.config.metrics_ports.get(service):
            return 0
        if name == service:
            return self.config.metrics_ports[service]
        extra = [n for n in self.names if n != "aws" and n != self.service_of(n)]  # every second, third ... replica
        return max(self.config.metrics_ports.values()) + 1 + extra.index(name)

    def _env(self, name: str) -> dict[str, str]:
        env = {**os.environ, **self.config.environment(), "PYTHONUNBUFFERED": "1"}
        service = self.service_of(name)
        if service in SERVICES:
            env.update(self.config.service_environment(service))
            env["SCHIZODOT_METRICS_PORT"] = str(self._metrics_port(name))
            env.update(self.config.extra_env)  # a test's explicit setting wins
            if service in self.sockets:
                env[LISTEN_FD_VARIABLE] = str(self.sockets[service].fileno())
        env.setdefault("HF_HUB_OFFLINE", "1")
        return env

    def _command(self, name: str) -> list[str]:
        if name == "aws":
            command = [sys.executable, "-m", "local_aws", "-H", "127.0.0.1", "-p", str(self.config.aws_port)]
            if self.config.durability != "memory":
                command += ["--data-dir", str(self.config.aws_data_dir),
                            "--sync", "full" if self.config.durability == "fsync" else "normal"]
            return command
        return [sys.executable, "-m", f"services.{self.service_of(name)}.main"]

    def _start(self, name: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")
        service = self.service_of(name)
        inherited = (self.sockets[service].fileno(),) if service in self.sockets else ()
        self.children[name] = subprocess.Popen(
            self._command(name), stdout=log, stderr=subprocess.STDOUT, env=self._env(name), cwd=REPO_ROOT,
            pass_fds=inherited,
        )
        self.started_at[name] = time.monotonic()
        self._write_pids()

    def _write_pids(self) -> None:
        state = {name: {"pid": child.pid, "restarts": self.restarts[name]} for name, child in self.children.items()}
        state["supervisor"] = {"pid": os.getpid(), "restarts": 0}
        partial = self.config.state_dir / "pids.json.partial"
        partial.write_text(json.dumps(state))
        os.replace(partial, self.config.state_dir / "pids.json")  # readers never see half a file

    def _provision(self) -> None:
        from shared.runtime.infra import ensure_infrastructure
        from shared.settings import CommonSettings

        os.environ.update(self.config.environment())
        ensure_infrastructure(CommonSettings())

    def _bind_api_sockets(self) -> None:
        """One listening socket per API, held here: the stage's processes all
        accept on it, and connections wait in its backlog while they restart."""
        for service, port_field in API_STAGES.items():
            host = {**os.environ, **self.config.extra_env}.get(f"{service.upper()}_API_HOST", "127.0.0.1")
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, getattr(self.config, port_field)))
            sock.listen(512)
            sock.set_inheritable(True)
            self.sockets[service] = sock

    def _aws_ready(self) -> None:
        """Wait for a (re)started AWS server and make sure the resources exist.
        A failure here is logged, not fatal: the services retry, and so do we."""
        try:
            wait_for_port(self.config.aws_port, 60)
            self._provision()
        except Exception as error:  # noqa: BLE001 - the supervisor must outlive its children's troubles
            print(f"the AWS server is not ready yet: {type(error).__name__}: {error}", flush=True)

    def run(self) -> None:
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "stopping", True))
        self._bind_api_sockets()
        self._start("aws")
        wait_for_port(self.config.aws_port, 60)
        self._provision()
        for name in self.names[1:]:
            self._start(name)
        (self.config.state_dir / "ready").write_text("ok")
        not_before: dict[str, float] = {}
        while not self.stopping:
            time.sleep(0.2)
            for name, child in list(self.children.items()):
                if child.poll() is None or self.stopping:
                    continue
                now = time.monotonic()
                if name not in not_before:
                    # Restart at once after a long run or a kill from outside (OOM, an
                    # operator, chaos); back off, up to 10 s, when it keeps exiting by
                    # itself soon after starting (a crash loop: a missing model, say).
                    ran = now - self.started_at.get(name, now)
                    killed = child.returncode is not None and child.returncode < 0
                    self.quick_exits[name] = 0 if ran >= 30 or killed else self.quick_exits[name] + 1
                    delay = 0 if self.quick_exits[name] <= 1 else min(2 ** (self.quick_exits[name] - 1), 10)
                    not_before[name] = now + delay
                if now < not_before[name]:
                    continue
                del not_before[name]
                self.restarts[name] += 1
                print(f"{name} exited with {child.returncode}; restarting (restart {self.restarts[name]})", flush=True)
                self._start(name)
                if name == "aws":
                    self._aws_ready()
        self._shutdown()

    def _shutdown(self) -> None:
        services = [name for name in self.names if name != "aws"]
        for name in services:  # services first, so they can still reach AWS while draining
            if name in self.children and self.children[name].poll() is None:
                self.children[name].send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 40
        for name in services:
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
        for sock in self.sockets.values():
            sock.close()
        for name in ("pids.json", "ready", "env", "config.json"):
            (self.config.state_dir / name).unlink(missing_ok=True)
