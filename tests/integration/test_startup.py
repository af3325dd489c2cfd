"""A stage that cannot start as configured says which setting to fix and exits 2."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _start(module: str, settings, extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "AWS_ENDPOINT_URL": settings.aws_endpoint_url, "AWS_REGION": settings.aws_region,
           "SCHIZODOT_PSEUDONYM_KEY": "startup-tests",  # the APIs refuse to start without it (issue 12)
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "SCHIZODOT_METRICS_PORT": "0",
           **extra}
    return subprocess.run([sys.executable, "-m", module], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_missing_model_stops_the_worker_naming_the_setting(aws_server, tmp_path):
    result = _start("services.vision.main", aws_server, {"VISION_EMOTION_MODEL_PATH": str(tmp_path / "gone.tflite")})
    assert result.returncode == 2
    assert "set VISION_EMOTION_MODEL_PATH to a valid model file" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_taken_ingest_port_stops_ingest_naming_the_setting(aws_server):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        result = _start("services.ingest.main", aws_server, {"INGEST_API_PORT": port})
    assert result.returncode == 2
    assert "set INGEST_API_PORT to a free port" in result.stdout
