"""The video markers a clinician can follow over time, in the `shared.domain.markers` shape.

  facial_expressivity        how much the face moves between expressions: the standard
                             deviation over time of each of 16 expression blendshapes
                             (MediaPipe FaceLandmarker), averaged; 0 for a face that holds
                             one expression (blunted affect lowers it)
  positive_expression_share  % of the frames with an emotion reading whose reading is happy
  head_movement              mean angular speed of the head (deg/s): the rotation between
                             consecutive sampled frames, from the landmarker's facial
                             transformation matrix, over the time between them
  face_in_view_share         % of the analysed frames in which the patient's face was found

Their validity is measured by `python -m bench.vision --markers` (docs/clinical-measures.md, "Video markers").
A marker needs MIN_MARKER_SECONDS of face time; with less it is not assessed, and says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shared.domain.markers import measured, not_assessed

# Blendshapes that move with facial expression (not gaze or blinks).
EXPRESSIVE_BLENDSHAPES = (
    "mouthSmileLeft", "mouthSmileRight", "mouthFrownLeft", "mouthFrownRight",
    "mouthStretchLeft", "mouthStretchRight", "cheekSquintLeft", "cheekSquintRight",
    "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "eyeWideLeft", "eyeWideRight", "jawOpen",
)
MIN_MARKER_SECONDS = 3.0
# Two face frames further apart than this many sampling intervals are not one movement.
MAX_GAP_INTERVALS = 2.5

EXPRESSIVITY = ("blendshape activity (0-1)",
                "mean over 16 expression blendshapes of their SD over time (MediaPipe FaceLandmarker)")
POSITIVE_SHARE = ("%", "share of emotion readings that are happy ({model})")
HEAD_MOVEMENT = ("deg/s", "mean angular speed of the head between sampled frames "
                          "(MediaPipe FaceLandmarker facial transformation matrix)")
FACE_IN_VIEW = ("%", "share of analysed frames with the patient's face (MediaPipe FaceLandmarker)")


def _too_short(unit_method: tuple[str, str], seconds: float, flags: list[str], what: str = "the face") -> dict:
    unit, method = unit_method
    return not_assessed(unit, method, f"{what} was visible for {seconds:.1f} s; this marker needs at least "
                                      f"{MIN_MARKER_SECONDS:.0f} s", flags)


def facial_expressivity(blendshape_rows: list[dict[str, float]], face_seconds: float,
                        flags: list[str]) -> dict[str, Any]:
    if face_seconds < MIN_MARKER_SECONDS or len(blendshape_rows) < 2:
        return _too_short(EXPRESSIVITY, face_seconds, flags)
    rows = np.array([[row.get(name, 0.0) for name in EXPRESSIVE_BLENDSHAPES] for row in blendshape_rows])
    return measured(round(float(rows.std(axis=0).mean()), 4), *EXPRESSIVITY, flags)


def positive_expression_share(labels: list[str], reading_seconds: float, model: str,
                              flags: list[str], no_reading: str | None = None) -> dict[str, Any]:
    unit, method = POSITIVE_SHARE[0], POSITIVE_SHARE[1].format(model=model)
    if not labels:
        return not_assessed(unit, method, no_reading or "no frame gave an emotion reading", flags)
    if reading_seconds < MIN_MARKER_SECONDS:
        return not_assessed(unit, method, f"emotion readings cover {reading_seconds:.1f} s; this marker needs "
                                          f"at least {MIN_MARKER_SECONDS:.0f} s", flags)
    return measured(round(100.0 * labels.count("happy") / len(labels), 1), unit, method, flags)


def rotation_angle(a: np.ndarray, b: np.ndarray) -> float:
    """The angle (degrees) of the rotation that takes orientation a to orientation b."""
    relative = np.asarray(a).T @ np.asarray(b)
    return float(np.degrees(np.arccos(np.clip((np.trace(relative) - 1.0) / 2.0, -1.0, 1.0))))


def head_movement(times: list[float], rotations: list[np.ndarray | None], interval: float,
                  flags: list[str]) -> dict[str, Any]:
    angle = seconds = 0.0
    for (t0, r0), (t1, r1) in zip(zip(times, rotations), zip(times[1:], rotations[1:])):
        gap = t1 - t0
        if r0 is None or r1 is None or gap <= 0 or gap > MAX_GAP_INTERVALS * interval:
            continue
        angle += rotation_angle(r0, r1)
        seconds += gap
    if seconds < MIN_MARKER_SECONDS:
        return not_assessed(*HEAD_MOVEMENT, f"the head was tracked across {seconds:.1f} s; this marker needs "
                                            f"at least {MIN_MARKER_SECONDS:.0f} s", flags)
    return measured(round(angle / seconds, 2), *HEAD_MOVEMENT, flags)


def face_in_view_share(frames_with_face: int, analysed: int, flags: list[str]) -> dict[str, Any]:
    if analysed == 0:
        return not_assessed(*FACE_IN_VIEW, "no frame could be analysed", flags)
    return measured(round(100.0 * frames_with_face / analysed, 1), *FACE_IN_VIEW, flags)
