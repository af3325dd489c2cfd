"""MediaPipe Tasks face and hand landmarkers, reduced to plain numpy observations.

The .task files are read and checked once (`LandmarkModels`); each video gets
its own landmarkers built from those bytes (`LandmarkSession`, about 50 ms),
so that tracking state from one check-in never leaks into the next one, and
timestamps start again at 0. Face and hands run in VIDEO mode, which tracks
between frames: on a 720p clip with a smallish face it found the face in 130
of 150 frames where IMAGE mode found it in 29. A third, IMAGE-mode face
landmarker searches tiles of frames where no face was found (see
`LandmarkSession`).
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import mediapipe as mp
import numpy as np
from mediapipe.tasks.python import BaseOptions, vision

from services.vision.frames import SampledFrame
from shared.domain.errors import ModelUnavailable

MAX_FACES = 4  # > 1 so that a second person in view is reported
MAX_HANDS = 2


@dataclass
class FaceObservation:
    landmarks: np.ndarray  # (478, 3): x, y in pixels of the analysed frame, z as MediaPipe gives it
    blendshapes: dict[str, float]
    bbox: tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
    # 3x3 rotation of the head relative to the camera, from the landmarker's facial
    # transformation matrix (None when MediaPipe gave none)
    rotation: np.ndarray | None = None

    @property
    def area(self) -> float:
        x0, y0, x1, y1 = self.bbox
        return max(0.0, x1 - x0) * max(0.0, y1 - y0)


@dataclass
class HandObservation:
    landmarks: np.ndarray  # (21, 3), pixels like FaceObservation
    handedness: str
    score: float  # MediaPipe's handedness score for this hand


def _read_model(path: Path, setting: str) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise ModelUnavailable(setting, path, "model file not found")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelUnavailable(setting, path, f"model file cannot be read ({exc})") from exc


class LandmarkModels:
    """The face and hand landmarker models, loaded and checked once."""

    def __init__(self, face_path: Path, hand_path: Path) -> None:
        self.face_path, self.hand_path = Path(face_path), Path(hand_path)
        self._face_bytes = _read_model(self.face_path, "VISION_FACE_LANDMARKER_PATH")
        self._hand_bytes = _read_model(self.hand_path, "VISION_HAND_LANDMARKER_PATH")
        # Build both once now so that a wrong or corrupt file fails at start-up.
        session = self.open_session()
        session.close()
        self.face_digest = hashlib.sha256(self._face_bytes).hexdigest()[:12]
        self.hand_digest = hashlib.sha256(self._hand_bytes).hexdigest()[:12]

    def _face_landmarker(self, mode: vision.RunningMode) -> vision.FaceLandmarker:
        try:
            return vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
                base_options=BaseOptions(model_asset_buffer=self._face_bytes),
                running_mode=mode,
                num_faces=MAX_FACES,
                output_face_blendshapes=True,
                output_facial_transformation_matrixes=True,
            ))
        except Exception as exc:
            raise ModelUnavailable("VISION_FACE_LANDMARKER_PATH", self.face_path,
                                   f"not a MediaPipe face landmarker model ({type(exc).__name__}: {exc})") from exc

    def open_session(self) -> "LandmarkSession":
        face = self._face_landmarker(vision.RunningMode.VIDEO)
        try:
            tiles = self._face_landmarker(vision.RunningMode.IMAGE)
        except Exception:
            face.close()
            raise
        try:
            hands = vision.HandLandmarker.create_from_options(vision.HandLandmarkerOptions(
                base_options=BaseOptions(model_asset_buffer=self._hand_bytes),
                running_mode=vision.RunningMode.VIDEO,
                num_hands=MAX_HANDS,
            ))
        except Exception as exc:
            face.close()
            tiles.close()
            raise ModelUnavailable("VISION_HAND_LANDMARKER_PATH", self.hand_path,
                                   f"not a MediaPipe hand landmarker model ({type(exc).__name__}: {exc})") from exc
        return LandmarkSession(face, tiles, hands)


class HandSchedule(Protocol):
    """Which frames the hand model looks at, decided on the hands thread in frame order (each decision
    may rest on what the frames before it showed)."""

    def wants_hands(self, t: float) -> bool: ...

    def saw_hands(self, t: float) -> None: ...


class _EveryFrame:
    def __init__(self, look: bool) -> None:
        self.look = look

    def wants_hands(self, t: float) -> bool:
        return self.look

    def saw_hands(self, t: float) -> None:
        pass


@dataclass(frozen=True)
class StartedFrame:
    """A frame whose hands are being looked for on the hands thread (`LandmarkSession.start`)."""

    rgb: np.ndarray
    ts_ms: int
    hands: Future[list[HandObservation] | None]  # None: the schedule did not look at this frame


class LandmarkSession:
    """Landmarkers for one video; frames must come in increasing time order.

    The hand model runs on its own thread, one frame after another (`start`), so that it can work
    ahead of the face model (`finish`; `run_ahead` does both for a stream of frames): it is the dearer
    of the two (about 21 against 12 CPU ms a frame), and started a few frames early it stays busy
    instead of waiting for the face model frame by frame. Each landmarker still sees the same frames
    in the same order.

    MediaPipe's face detector is its short-range model: it misses faces narrower
    than about 11% of the frame (measured with a photo pasted on a wider canvas),
    e.g. a person sitting back from a 16:9 webcam. When the whole frame gives no
    face, it is searched again in square tiles (a second, IMAGE-mode landmarker,
    `tiles_for`): three along the long side of an elongated frame (faces down to
    about 11% of the short side), then overlapping SMALL_TILE-pixel tiles over
    frames big enough to hold them (faces down to about 45 px, a 48-pixel face
    from a webcam across the room).
    """

    def __init__(self, face: vision.FaceLandmarker, tiles: vision.FaceLandmarker,
                 hands: vision.HandLandmarker) -> None:
        self._face, self._tiles, self._hands = face, tiles, hands
        self._last_ms = -1
        self._last_tile: tuple[int, int, int] | None = None
        self._tile_searches = 0
        self._empty_searches = 0  # consecutive tile searches that found no face
        self._faceless_frames = 0
        # One worker: the hand landmarker (VIDEO mode, tracking) sees the frames in the order they started.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vision-hands")

    def __enter__(self) -> "LandmarkSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._face.close()
        self._tiles.close()
        self._hands.close()

    def detect(self, rgb: np.ndarray, t: float, *, hands: bool = True
               ) -> tuple[list[FaceObservation], list[HandObservation]]:
        """The faces and, when `hands`, the hands in one frame."""
        faces, found = self.finish(self.start(rgb, t, _EveryFrame(hands)))
        return faces, found or []

    def run_ahead(self, frames: Iterable[SampledFrame], schedule: HandSchedule, ahead: int
                  ) -> Iterator[tuple[SampledFrame, list[FaceObservation], list[HandObservation] | None]]:
        """Each frame with its faces and hands (None: not looked for), in order, the hand model working up
        to `ahead` frames before the face model (each held frame is one decoded image)."""
        started: deque[tuple[SampledFrame, StartedFrame]] = deque()
        for frame in frames:
            started.append((frame, self.start(frame.rgb, frame.t, schedule)))
            if len(started) > ahead:
                done, landmarks = started.popleft()
                yield done, *self.finish(landmarks)
        while started:
            done, landmarks = started.popleft()
            yield done, *self.finish(landmarks)

    def start(self, rgb: np.ndarray, t: float, schedule: HandSchedule) -> StartedFrame:
        """Queue the frame at `t` for the hand model, which looks at it if `schedule` wants it then."""
        ts_ms = max(int(round(t * 1000)), self._last_ms + 1)  # strictly increasing
        self._last_ms = ts_ms
        rgb = np.ascontiguousarray(rgb)
        return StartedFrame(rgb, ts_ms, self._pool.submit(self._scheduled_hands, rgb, t, ts_ms, schedule))

    def finish(self, frame: StartedFrame) -> tuple[list[FaceObservation], list[HandObservation] | None]:
        """The faces in a started frame (frames finish in the order they started), and its hands once the
        hands thread has them (None: not looked for)."""
        h, w = frame.rgb.shape[:2]
        # Both graphs spend their time in C++ without the GIL, so the two threads use two cores.
        # Each thread wraps the pixels in its own mp.Image: nothing native is shared.
        try:
            faces = _faces(self._face.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=frame.rgb),
                                                       frame.ts_ms), w, h, 0, 0)
            if not faces:
                faces = self._faces_in_tiles(frame.rgb)
        finally:
            hands = frame.hands.result()
        return faces, hands

    def _scheduled_hands(self, rgb: np.ndarray, t: float, ts_ms: int, schedule: HandSchedule
                         ) -> list[HandObservation] | None:
        if not schedule.wants_hands(t):
            return None
        h, w = rgb.shape[:2]
        result = self._hands.detect_for_video(mp.Image(image_format=mp.ImageFormat.SRGB, data=rgb), ts_ms)
        found: list[HandObservation] = []
        handedness = result.handedness or []
        for i, lms in enumerate(result.hand_landmarks or []):
            label, score = "unknown", 0.0
            if i < len(handedness) and handedness[i]:
                label = handedness[i][0].category_name or "unknown"
                score = float(handedness[i][0].score)
            found.append(HandObservation(_to_pixels(lms, w, h, 0, 0), label, score))
        if found:
            schedule.saw_hands(t)
        return found

    def _faces_in_tiles(self, rgb: np.ndarray) -> list[FaceObservation]:
        """Faces found in square tiles of the frame (`tiles_for`).

        Usually the search stops at the first tile with a face (the tile that
        last had one first), which keeps the cost down for a patient who sits
        back from the camera for the whole video. Every TILE_FULL_SEARCH_EVERY-th
        search looks in all tiles, so that a second small face (another person)
        is still noticed. After TILE_IDLE_AFTER searches in a row found nothing
        (nobody in view), only every TILE_IDLE_EVERY-th faceless frame is searched.
        """
        h, w = rgb.shape[:2]
        tiles = tiles_for(w, h)
        if not tiles:
            return []
        self._faceless_frames += 1
        if self._empty_searches >= TILE_IDLE_AFTER and self._faceless_frames % TILE_IDLE_EVERY:
            return []
        if self._last_tile in tiles:
            tiles.remove(self._last_tile)
            tiles.insert(0, self._last_tile)
        exhaustive = self._tile_searches % TILE_FULL_SEARCH_EVERY == 0
        self._tile_searches += 1
        found: list[FaceObservation] = []
        for x0, y0, side in tiles:
            tile = np.ascontiguousarray(rgb[y0:y0 + side, x0:x0 + side])
            result = self._tiles.detect(mp.Image(image_format=mp.ImageFormat.SRGB, data=tile))
            faces = _faces(result, side, side, x0, y0)
            if faces and not found:
                self._last_tile = (x0, y0, side)
            found.extend(f for f in faces if not any(_same_face(f, g) for g in found))
            if found and not exhaustive:
                break
        self._empty_searches = 0 if found else self._empty_searches + 1
        return found


# Long-side tiles are searched only in frames at least this elongated (16:9 is 1.78).
TILE_MIN_ASPECT = 1.3
# Small tiles: a 48-px face is 12.5% of a 384-px tile, within the short-range detector's reach;
# they cover frames whose short side is at least SMALL_TILE_MIN_FRAME, overlapping by 40%.
SMALL_TILE = 384
SMALL_TILE_MIN_FRAME = 480
SMALL_TILE_STEP = 0.6
TILE_FULL_SEARCH_EVERY = 5
TILE_IDLE_AFTER = 3
TILE_IDLE_EVERY = 4


def _positions(length: int, side: int) -> list[int]:
    count = int(np.ceil(max(length - side, 0) / (SMALL_TILE_STEP * side))) + 1
    return sorted(set(np.linspace(0, length - side, count).round().astype(int).tolist()))


def tiles_for(w: int, h: int) -> list[tuple[int, int, int]]:
    """Square tiles (x0, y0, side) to search a frame without a face in, nearest the centre first."""
    tiles: list[tuple[int, int, int]] = []
    short = min(w, h)
    if max(w, h) >= TILE_MIN_ASPECT * short:
        span = max(w, h) - short
        tiles += [(offset, 0, short) if w > h else (0, offset, short) for offset in (span // 2, 0, span)]
    if short >= SMALL_TILE_MIN_FRAME:
        small = [(x, y, SMALL_TILE) for y in _positions(h, SMALL_TILE) for x in _positions(w, SMALL_TILE)]
        small.sort(key=lambda t: abs(t[0] + t[2] / 2 - w / 2) + abs(t[1] + t[2] / 2 - h / 2))
        tiles += small
    return tiles


def _faces(result, w: int, h: int, x0: int, y0: int) -> list[FaceObservation]:
    faces: list[FaceObservation] = []
    blendshape_lists = result.face_blendshapes or []
    matrices = result.facial_transformation_matrixes or []
    for i, lms in enumerate(result.face_landmarks or []):
        pts = _to_pixels(lms, w, h, x0, y0)
        shapes = {c.category_name: float(c.score) for c in blendshape_lists[i]} if i < len(blendshape_lists) else {}
        box = (float(pts[:, 0].min()), float(pts[:, 1].min()), float(pts[:, 0].max()), float(pts[:, 1].max()))
        rotation = np.array(matrices[i], dtype=np.float64)[:3, :3] if i < len(matrices) else None
        faces.append(FaceObservation(pts, shapes, box, rotation))
    return faces


def _same_face(a: FaceObservation, b: FaceObservation) -> bool:
    """One face seen in two overlapping tiles: the boxes' centres nearly coincide."""
    ax, ay = (a.bbox[0] + a.bbox[2]) / 2, (a.bbox[1] + a.bbox[3]) / 2
    bx, by = (b.bbox[0] + b.bbox[2]) / 2, (b.bbox[1] + b.bbox[3]) / 2
    size = max(a.bbox[2] - a.bbox[0], b.bbox[2] - b.bbox[0], 1.0)
    return abs(ax - bx) < 0.5 * size and abs(ay - by) < 0.5 * size


def _to_pixels(landmarks: list, w: int, h: int, x0: int, y0: int) -> np.ndarray:
    pts = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float32)
    pts[:, 0] = pts[:, 0] * w + x0
    pts[:, 1] = pts[:, 1] * h + y0
    return pts
