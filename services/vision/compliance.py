"""Medication-intake steps seen by the camera, and the verification status.

Steps, in the order an intake happens:
  face_in_view   a face was found (the patient is in front of the camera)
  hand_in_view   a hand was found
  hand_to_mouth  a fingertip or the thumb tip came within HAND_TO_MOUTH_MAX_DISTANCE
                 face widths of the lips, in the image plane (depth is not known,
                 so a hand held between face and camera counts too)
  mouth_open     the jawOpen blendshape reached MOUTH_OPEN_MIN_JAW_OPEN
  pill_visible   not assessed: needs a pill detector (a later issue)
  pill_in_mouth  not assessed: needs a pill detector

Verification status: without a pill detector intake cannot be verified either
way, so the status is always "inconclusive" and `compliance_score` is None.
"compliant" and "non_compliant" are reserved for when a pill detector is
configured: "non_compliant" needs positive evidence (a pill seen but never
reaching the mouth), and an empty frame or a missing face is not that evidence
(the camera may simply have pointed elsewhere), so it stays "inconclusive".

A step's `confidence` is the strength of the evidence for it:
min(1, frames in which it was seen / STEP_FIRM_FRAMES). The overall
`confidence` is how much of the six-step intake sequence the video supports:
the sum of the step confidences over six, so it cannot exceed 4/6 while pills
are not assessed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

HAND_TO_MOUTH_MAX_DISTANCE = 0.20  # face widths, fingertip to the nearest lip landmark
MOUTH_OPEN_MIN_JAW_OPEN = 0.30  # jawOpen blendshape; ordinary speech mostly stays below
STEP_FIRM_FRAMES = 3  # seen in this many sampled frames (0.6 s at 5 fps) counts as firm
# A hand at the mouth often hides the face from the landmarker: the mouth
# position of the last face seen up to this long before is used instead.
FACE_CARRY_OVER_S = 1.0

# MediaPipe face mesh indices: outer lip contour, and the cheek extremes used as the face width.
LIP_LANDMARKS = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,
                          409, 270, 269, 267, 0, 37, 39, 40, 185, 13, 14])
FACE_WIDTH_LANDMARKS = (234, 454)
# MediaPipe hand indices: thumb tip and the four fingertips.
FINGERTIP_LANDMARKS = np.array([4, 8, 12, 16, 20])

NO_PILL_NOTE = "not assessed: no pill detector configured"
STEP_NAMES = ("face_in_view", "hand_in_view", "hand_to_mouth", "mouth_open", "pill_visible", "pill_in_mouth")


def face_width(face_landmarks: np.ndarray) -> float:
    a, b = FACE_WIDTH_LANDMARKS
    width = float(np.linalg.norm(face_landmarks[a, :2] - face_landmarks[b, :2]))
    if width <= 0:
        width = float(np.ptp(face_landmarks[:, 0]))
    return max(width, 1.0)


def hand_mouth_distance(face_landmarks: np.ndarray, hand_landmarks: np.ndarray) -> float:
    """Smallest fingertip-to-lip distance, in face widths (image plane)."""
    lips = face_landmarks[LIP_LANDMARKS, :2]
    tips = hand_landmarks[FINGERTIP_LANDMARKS, :2]
    distances = np.linalg.norm(tips[:, None, :] - lips[None, :, :], axis=-1)
    return float(distances.min()) / face_width(face_landmarks)


@dataclass
class _Step:
    frames: int = 0
    first_seen_s: float | None = None
    extra: dict = field(default_factory=dict)

    def see(self, t: float) -> None:
        self.frames += 1
        if self.first_seen_s is None:
            self.first_seen_s = t


class ComplianceTracker:
    """Fed one sampled frame at a time (the primary face, or None, and all hands)."""

    def __init__(self) -> None:
        self.frames = 0
        self.face = _Step()
        self.hand = _Step()
        self.hand_to_mouth = _Step()
        self.mouth_open = _Step()
        self.frames_mouth_known = 0  # frames with a face or a recent one (hand_to_mouth assessable)
        self.closest_hand_mouth: float | None = None
        self.max_jaw_open: float | None = None
        self._last_face: np.ndarray | None = None
        self._last_face_t = -1e9

    def add(self, t: float, face_landmarks: np.ndarray | None, jaw_open: float | None,
            hands: list[np.ndarray]) -> None:
        self.frames += 1
        if face_landmarks is not None:
            self.face.see(t)
            self._last_face, self._last_face_t = face_landmarks, t
        if hands:
            self.hand.see(t)
        if jaw_open is not None:
            self.max_jaw_open = max(self.max_jaw_open or 0.0, jaw_open)
            if jaw_open >= MOUTH_OPEN_MIN_JAW_OPEN:
                self.mouth_open.see(t)
        mouth_face = face_landmarks
        if mouth_face is None and self._last_face is not None and t - self._last_face_t <= FACE_CARRY_OVER_S:
            mouth_face = self._last_face
        if mouth_face is not None:
            self.frames_mouth_known += 1
            if hands:
                d = min(hand_mouth_distance(mouth_face, h) for h in hands)
                if self.closest_hand_mouth is None or d < self.closest_hand_mouth:
                    self.closest_hand_mouth = d
                if d <= HAND_TO_MOUTH_MAX_DISTANCE:
                    self.hand_to_mouth.see(t)

    def result(self) -> dict:
        n = self.frames
        steps = [
            _observed_step("face_in_view", self.face, n, "a face"),
            _observed_step("hand_in_view", self.hand, n, "a hand"),
        ]
        if self.face.frames == 0:
            steps.append(_unassessable("hand_to_mouth", "cannot assess: no face was visible, so the mouth was never located"))
            steps.append(_unassessable("mouth_open", "cannot assess: no face was visible"))
        else:
            closest = ("" if self.closest_hand_mouth is None
                       else f"; closest approach {self.closest_hand_mouth:.2f} face widths")
            steps.append(_observed_step(
                "hand_to_mouth", self.hand_to_mouth, self.frames_mouth_known,
                f"a fingertip within {HAND_TO_MOUTH_MAX_DISTANCE:.2f} face widths of the lips", closest))
            jaw = "" if self.max_jaw_open is None else f"; largest jawOpen {self.max_jaw_open:.2f}"
            steps.append(_observed_step(
                "mouth_open", self.mouth_open, self.face.frames,
                f"jawOpen at or above {MOUTH_OPEN_MIN_JAW_OPEN:.2f}", jaw))
        steps.append(_unassessable("pill_visible", NO_PILL_NOTE))
        steps.append(_unassessable("pill_in_mouth", NO_PILL_NOTE))

        confidence = sum(s["confidence"] or 0.0 for s in steps if s["observed"]) / len(STEP_NAMES)
        return {
            "pill_detected": None,
            "hand_detected": self.hand.frames > 0,
            "face_detected": self.face.frames > 0,
            "compliance_score": None,
            "confidence": round(confidence, 3),
            "verification_status": "inconclusive",
            "steps": steps,
            "reason": self._reason(steps),
            "thresholds": {
                "hand_to_mouth_max_face_widths": HAND_TO_MOUTH_MAX_DISTANCE,
                "mouth_open_min_jaw_open": MOUTH_OPEN_MIN_JAW_OPEN,
                "firm_evidence_frames": STEP_FIRM_FRAMES,
            },
        }

    def _reason(self, steps: list[dict]) -> str:
        head = "pill detection is not configured, so intake cannot be verified"
        if self.frames == 0:
            return head + "; no frames were analysed"
        if self.face.frames == 0:
            seen = (f"a hand was seen at {self.hand.first_seen_s:.1f} s" if self.hand.frames
                    else "no hand was seen either")
            return (f"{head}; no face was visible in any of the {self.frames} analysed frames, "
                    f"so the patient cannot be identified with the intake ({seen})")
        parts = [f"the face was seen from {self.face.first_seen_s:.1f} s ({self.face.frames}/{self.frames} frames)"]
        if self.hand.frames:
            parts.append(f"a hand from {self.hand.first_seen_s:.1f} s")
        else:
            parts.append("no hand was seen")
        if self.hand_to_mouth.frames:
            parts.append(f"the hand reached the mouth at {self.hand_to_mouth.first_seen_s:.1f} s")
        elif self.hand.frames:
            parts.append("the hand never reached the mouth")
        if self.mouth_open.frames:
            parts.append(f"the mouth opened at {self.mouth_open.first_seen_s:.1f} s")
        else:
            parts.append("the mouth was never seen wide open")
        return f"{head}; " + ", ".join(parts)


def _observed_step(name: str, step: _Step, assessable_frames: int, what: str, detail: str = "") -> dict:
    if step.frames:
        note = f"{what} in {step.frames} of {assessable_frames} frames{detail}"
        return {"step": name, "observed": True, "first_seen_s": round(step.first_seen_s, 2),
                "confidence": round(min(1.0, step.frames / STEP_FIRM_FRAMES), 3), "note": note}
    return {"step": name, "observed": False, "first_seen_s": None, "confidence": None,
            "note": f"{what} in none of {assessable_frames} frames{detail}"}


def _unassessable(name: str, note: str) -> dict:
    return {"step": name, "observed": None, "first_seen_s": None, "confidence": None, "note": note}
