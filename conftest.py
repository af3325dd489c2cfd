"""Checks before any test runs: the system tools and model files the suite uses
must be there (`make setup` installs them). A missing one stops the run with
that instruction instead of tests skipping or failing one by one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
TOOLS = ("ffmpeg", "ffprobe", "espeak-ng")
MODELS = ("silero_vad.onnx", "face_landmarker.task", "hand_landmarker.task", "fer_emotion_quantized.tflite",
          "face_expression.onnx", "yolo11n-seg.pt", "whisper-tiny.en")


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += [f"models/{name}" for name in MODELS if not (REPO / "models" / name).exists()]
    if missing:
        pytest.exit(f"missing {', '.join(missing)}: run `make setup` (or `make test`)", returncode=2)
