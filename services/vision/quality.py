"""How well one sampled frame shows the patient's face, and what that allows.

Each frame with a face gets a `FaceQuality`: the face's width in pixels, its
brightness, the head's yaw, pitch and roll (from MediaPipe's facial
transformation matrix), and whether part of it is covered. Conditions that
weaken a reading become quality flags; conditions that void it make the frame
unreadable for facial emotion (it still counts as a face in view):

  face_small          the face box is narrower than FACE_SMALL_PX (the crop is upscaled
                      from fewer pixels than the networks were trained on)
  face_dark           the face's median brightness is below FACE_DARK_BRIGHTNESS (0-255)
  face_turned         yaw or pitch beyond FACE_TURNED_DEG; beyond FACE_UNREADABLE_DEG the
                      frame gives no emotion reading (both networks learnt frontal faces)
  face_partly_covered a hand lies over the face (MediaPipe found one with at least
                      COVERING_HAND_POINTS landmarks inside the face box), or the mouth or
                      both eyes are a flat patch (a mask, a hand the hand model missed):
                      their texture under COVERED_TEXTURE_RATIO of the face's

A video carries a flag when at least FLAG_MIN_SHARE of its face frames do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

FACE_SMALL_PX = 60
FACE_DARK_BRIGHTNESS = 50.0
FACE_TURNED_DEG = 30.0
FACE_UNREADABLE_DEG = 45.0
COVERING_HAND_POINTS = 5
COVERED_TEXTURE_RATIO = 0.2
FLAG_MIN_SHARE = 0.25
FLAGS = ("face_small", "face_dark", "face_turned", "face_partly_covered")

# MediaPipe face mesh indices around the mouth and each eye (outer contours).
MOUTH_REGION = np.array([61, 291, 0, 17, 13, 14, 78, 308, 40, 270, 91, 321])
LEFT_EYE_REGION = np.array([33, 133, 159, 145, 160, 144, 158, 153, 70, 105])
RIGHT_EYE_REGION = np.array([263, 362, 386, 374, 387, 373, 385, 380, 300, 334])


@dataclass
class FaceQuality:
    width_px: float
    brightness: float
    yaw: float | None  # degrees, + = the patient's left cheek toward the camera
    pitch: float | None  # degrees
    roll: float | None  # degrees
    covered: bool
    flags: list[str] = field(default_factory=list)
    unreadable: str | None = None  # why this frame gives no emotion reading


def head_angles(rotation: np.ndarray) -> tuple[float, float, float]:
    """Yaw (about the vertical axis), pitch (about the horizontal), roll (in the image plane), degrees."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = np.degrees(np.arcsin(np.clip(-r[2, 0], -1.0, 1.0)))
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return float(yaw), float(pitch), float(roll)


def _region_texture(grey: np.ndarray, points: np.ndarray) -> float | None:
    h, w = grey.shape
    x0, y0 = np.floor(points.min(axis=0)).astype(int)
    x1, y1 = np.ceil(points.max(axis=0)).astype(int)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 3 or y1 - y0 < 3:
        return None
    patch = grey[y0:y1, x0:x1].astype(np.float32)
    return float(cv2.Laplacian(patch, cv2.CV_32F).std())


def covered_by_flat_patch(rgb: np.ndarray, landmarks: np.ndarray, bbox: tuple) -> bool:
    """The mouth or both eyes show far less texture (edges) than the face as a whole."""
    x0, y0, x1, y1 = (int(round(v)) for v in bbox)
    h, w = rgb.shape[:2]
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return False
    grey = cv2.cvtColor(np.ascontiguousarray(rgb[y0:y1, x0:x1]), cv2.COLOR_RGB2GRAY)
    face = float(cv2.Laplacian(grey.astype(np.float32), cv2.CV_32F).std())
    if face <= 1e-6:
        return False
    pts = landmarks[:, :2] - np.array([x0, y0], dtype=np.float32)
    ratio = {}
    for name, region in (("mouth", MOUTH_REGION), ("left", LEFT_EYE_REGION), ("right", RIGHT_EYE_REGION)):
        texture = _region_texture(grey, pts[region])
        ratio[name] = None if texture is None else texture / face
    flat = {k: v is not None and v < COVERED_TEXTURE_RATIO for k, v in ratio.items()}
    return flat["mouth"] or (flat["left"] and flat["right"])


def hand_over_face(bbox: tuple, hands: list[np.ndarray]) -> bool:
    x0, y0, x1, y1 = bbox
    mx, my = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    for hand in hands:
        inside = ((hand[:, 0] > x0 + mx) & (hand[:, 0] < x1 - mx) & (hand[:, 1] > y0 + my) & (hand[:, 1] < y1 - my))
        if int(inside.sum()) >= COVERING_HAND_POINTS:
            return True
    return False


def assess(rgb: np.ndarray, landmarks: np.ndarray, bbox: tuple, rotation: np.ndarray | None,
           hands: list[np.ndarray]) -> FaceQuality:
    """The quality of one face in one frame (`rgb` the whole frame, `hands` the hand landmarks)."""
    x0, y0, x1, y1 = bbox
    width = float(x1 - x0)
    h, w = rgb.shape[:2]
    inner = rgb[max(int(y0), 0):min(int(y1), h), max(int(x0), 0):min(int(x1), w)]
    brightness = float(np.median(cv2.cvtColor(np.ascontiguousarray(inner), cv2.COLOR_RGB2GRAY))) if inner.size else 0.0
    yaw = pitch = roll = None
    if rotation is not None:
        yaw, pitch, roll = head_angles(rotation)
    covered = hand_over_face(bbox, hands) or covered_by_flat_patch(rgb, landmarks, bbox)
    flags = []
    if width < FACE_SMALL_PX:
        flags.append("face_small")
    if brightness < FACE_DARK_BRIGHTNESS:
        flags.append("face_dark")
    turn = max(abs(yaw), abs(pitch)) if yaw is not None else 0.0
    if turn > FACE_TURNED_DEG:
        flags.append("face_turned")
    if covered:
        flags.append("face_partly_covered")
    unreadable = None
    if turn > FACE_UNREADABLE_DEG:
        unreadable = "turned_away"
    return FaceQuality(width, brightness, yaw, pitch, roll, covered, flags, unreadable)


def video_flags(qualities: list[FaceQuality]) -> list[str]:
    """The flags at least FLAG_MIN_SHARE of the face frames carry."""
    if not qualities:
        return []
    return [flag for flag in FLAGS
            if sum(flag in q.flags for q in qualities) >= FLAG_MIN_SHARE * len(qualities)]
