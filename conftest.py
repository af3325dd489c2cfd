"""Checks before any test runs: the system tools and model files the suite uses
must be there (`make setup` installs them). A missing one stops the run with
that instruction instead of tests skipping or failing one by one.

Which tests `make test-fast` leaves out is decided here, so no test has to remember:
- `server`: tests that start moto's server, the stack or another process (they
  use one of SERVER_FIXTURES, live in tests/faults, which kills and restarts AWS
  servers and stacks, run a contract case against a real adapter, or start the
  CLI and say so with the mark);
- `models`: the audio and vision analysers' own tests, which run the real models
  (their stages' handler tests, test_handlers.py, run with in-memory fakes).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent
TOOLS = ("ffmpeg", "ffprobe", "espeak-ng")
MODELS = ("silero_vad.onnx", "face_landmarker.task", "hand_landmarker.task", "fer_emotion_quantized.tflite",
          "face_expression.onnx", "yolo11n-seg.pt", "whisper-tiny.en", "whisper-base")


SERVER_FIXTURES = {"aws_server", "running_stack", "traced_stack", "workers"}
MODEL_TEST_FOLDERS = (REPO / "services" / "audio" / "tests", REPO / "services" / "vision" / "tests")
SERVER_TEST_FOLDERS = (REPO / "tests" / "faults",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(item.path)
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())) or any(
                folder in path.parents for folder in SERVER_TEST_FOLDERS):
            item.add_marker(pytest.mark.server)
        if path.parent in MODEL_TEST_FOLDERS and path.name != "test_handlers.py":
            item.add_marker(pytest.mark.models)


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    missing += [f"models/{name}" for name in MODELS if not (REPO / "models" / name).exists()]
    if missing:
        pytest.exit(f"missing {', '.join(missing)}: run `make setup` (or `make test`)", returncode=2)
