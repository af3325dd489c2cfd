"""The embedded AWS server (local_aws) as its own process, for the security tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from schizodot.stack import AWS_ACCESS_KEY, REPO_ROOT, wait_for_port
from shared.aws.clients import sync_client
from shared.settings import CommonSettings
from tests.conftest import free_port

SECRET = "the-servers-own-secret"
PATIENT_PAGE = "http://127.0.0.1:8080"  # the one browser origin it lets in


class AwsServer:
    """`python -m local_aws` with its state in `data_dir`, signing key AWS_ACCESS_KEY/SECRET."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.settings = CommonSettings(aws_endpoint_url=self.endpoint, aws_region="us-east-1")
        self.process: subprocess.Popen | None = None

    def start(self, *extra: str) -> "AwsServer":
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local_aws", "-p", str(self.port), "--data-dir", str(self.data_dir),
             *extra],
            cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY,
                 "AWS_SECRET_ACCESS_KEY": SECRET,
                 "SCHIZODOT_BROWSER_ORIGINS": PATIENT_PAGE})
        wait_for_port(self.port, 60)
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def client(self, service: str, secret: str = SECRET):
        """A client signing with `secret` (the server's own by default)."""
        previous = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
        os.environ.update({"AWS_ACCESS_KEY_ID": AWS_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": secret})
        try:
            return sync_client(self.settings, service)
        finally:
            for key, value in previous.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
