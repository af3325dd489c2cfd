"""Medication-intake steps seen by the camera, and the verification status.

Steps, in the order of the observed-dosing protocol:
  face_in_view       a face was found (the patient is in front of the camera)
  hand_in_view       a hand was found
  pill_visible       the pill detector saw a pill outside the mouth (held up)
  hand_to_mouth      a fingertip or the thumb tip came within HAND_TO_MOUTH_MAX_DISTANCE
                     face widths of the lips, in the image plane (depth is not known,
                     so a hand held between face and camera counts too)
  mouth_open         the jawOpen blendshape reached MOUTH_OPEN_MIN_JAW_OPEN
  pill_in_mouth      the detector saw a pill inside the mouth box (or its
                     pill_on_tongue class fired)
  mouth_empty_after  after the pill was in the mouth, the landmarks showed the mouth
                     open (jawOpen at or above MOUTH_OPEN_MIN_JAW_OPEN) and the detector,
                     looking at that open mouth, saw no pill in it

The three pill steps need a pill detector. Without one, intake is not assessed:
`verification_status` "not_assessed", `assessed` False, `pill_detected` and
`compliance_score` None, and `reason` says that no detector is configured (a fact
about the deployment, never about the patient).

With a detector, the status needs positive evidence either way:
  compliant      face seen, pill in the mouth, then the mouth shown open and empty,
                 and no pill seen outside the mouth after that
  non_compliant  a pill was taken back out of the mouth (seen outside it after it
                 was in it, with no empty mouth shown later), or a pill was shown and
                 the mouth shown empty but the pill never went in
  inconclusive   anything else (a missing face, steps not seen), with the reason
The detector's provenance travels with every result (`pill_detector`), and a
model that is not validated on real pills says so in the reason and the notes.

A step's `confidence` is the strength of the evidence for it:
min(1, frames in which it was seen / STEP_FIRM_FRAMES), times the best
detection score for the detector's steps. The overall `confidence` is how much
of the seven-step protocol the video supports: the sum of the step
confidences over seven. `compliance_score` (with a detector) is the weighted
share of the protocol observed, the pill-in-mouth and empty-mouth steps
counting double.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from services.vision.pills import Detection, face_width

HAND_TO_MOUTH_MAX_DISTANCE = 0.20  # face widths, fingertip to the nearest lip landmark
MOUTH_OPEN_MIN_JAW_OPEN = 0.30  # jawOpen blendshape; ordinary speech mostly stays below
STEP_FIRM_FRAMES = 3  # seen in this many sampled frames (0.6 s at 5 fps) counts as firm
# A hand at the mouth often hides the face from the landmarker: the mouth
# position of the last face seen up to this long before is used instead.
FACE_CARRY_OVER_S = 1.0
# A detected pill whose centre lies within the lips' box, enlarged by this share
# of the face width each side, is in the mouth rather than held up.
MOUTH_BOX_MARGIN = 0.10
# A pill seen outside the mouth this long after it was on the tongue was taken out again.
PILL_REMOVED_AFTER_S = 0.5

# MediaPipe face mesh indices: outer lip contour, and the cheek extremes used as the face width.
LIP_LANDMARKS = np.array([61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291,
                          409, 270, 269, 267, 0, 37, 39, 40, 185, 13, 14])
# MediaPipe hand indices: thumb tip and the four fingertips.
FINGERTIP_LANDMARKS = np.array([4, 8, 12, 16, 20])

NO_PILL_NOTE = "not assessed: no pill detector configured"
NO_DETECTOR_REASON = ("no pill detector is configured in this deployment, so medication intake was not assessed "
                      "(this says nothing about the patient)")
NO_DETECTOR_BLOCK = {"configured": False, "model": None, "validated_on_real_pills": False, "note": None}
STEP_NAMES = ("face_in_view", "hand_in_view", "pill_visible", "hand_to_mouth", "mouth_open", "pill_in_mouth",
              "mouth_empty_after")
PILL_STEPS = ("pill_visible", "pill_in_mouth", "mouth_empty_after")
STEP_WEIGHTS = {"face_in_view": 1, "hand_in_view": 1, "pill_visible": 1, "hand_to_mouth": 1, "mouth_open": 1,
                "pill_in_mouth": 2, "mouth_empty_after": 2}


def hand_mouth_distance(face_landmarks: np.ndarray, hand_landmarks: np.ndarray) -> float:
    """Smallest fingertip-to-lip distance, in face widths (image plane)."""
    lips = face_landmarks[LIP_LANDMARKS, :2]
    tips = hand_landmarks[FINGERTIP_LANDMARKS, :2]
    distances = np.linalg.norm(tips[:, None, :] - lips[None, :, :], axis=-1)
    return float(distances.min()) / face_width(face_landmarks)


def mouth_box(face_landmarks: np.ndarray) -> tuple[float, float, float, float]:
    lips = face_landmarks[LIP_LANDMARKS, :2]
    pad = MOUTH_BOX_MARGIN * face_width(face_landmarks)
    (x0, y0), (x1, y1) = lips.min(axis=0), lips.max(axis=0)
    return float(x0 - pad), float(y0 - pad), float(x1 + pad), float(y1 + pad)


def _inside(point: tuple[float, float], box: tuple[float, float, float, float]) -> bool:
    return box[0] <= point[0] <= box[2] and box[1] <= point[1] <= box[3]


@dataclass
class _Step:
    frames: int = 0
    first_seen_s: float | None = None
    last_seen_s: float | None = None
    best_score: float = 0.0
    extra: dict = field(default_factory=dict)

    def see(self, t: float, score: float = 1.0) -> None:
        self.frames += 1
        if self.first_seen_s is None:
            self.first_seen_s = t
        self.last_seen_s = t
        self.best_score = max(self.best_score, score)


class ComplianceTracker:
    """Fed one sampled frame at a time (`add`: the primary face, or None, and all
    hands) and, with a pill detector, the detections of the frames it looked at
    (`add_detections`, in time order). Both return {step: strength} for the steps
    the frame shows, so that the caller can keep the best frame of each step."""

    def __init__(self, pill_detector: dict | None = None) -> None:
        """`pill_detector`: the detector's `pill_detector` block (pills.Provenance.as_block), None without one."""
        self.detector = dict(pill_detector) if pill_detector else None
        self.pill_detector = self.detector is not None
        self.frames = 0
        self.face = _Step()
        self.hand = _Step()
        self.hand_to_mouth = _Step()
        self.mouth_open = _Step()
        self.pill = _Step()  # outside the mouth
        self.pill_in_mouth = _Step()
        self.empty_mouth = _Step()  # any empty open mouth
        self.empty_after = _Step()  # an empty open mouth after the pill was in it
        self.pill_after_mouth = _Step()  # a pill outside the mouth after it was in it
        self.frames_pill_checked = 0
        self.frames_mouth_known = 0  # frames with a face or a recent one (hand_to_mouth assessable)
        self.closest_hand_mouth: float | None = None
        self.max_jaw_open: float | None = None
        self._last_face: np.ndarray | None = None
        self._last_face_t = -1e9

    def mouth_face(self, t: float, face_landmarks: np.ndarray | None) -> np.ndarray | None:
        """The face whose mouth counts at time t: this frame's, or a recent one (hidden by the hand)."""
        if face_landmarks is not None:
            return face_landmarks
        if self._last_face is not None and t - self._last_face_t <= FACE_CARRY_OVER_S:
            return self._last_face
        return None

    def add(self, t: float, face_landmarks: np.ndarray | None, jaw_open: float | None,
            hands: list[np.ndarray]) -> dict[str, float]:
        seen: dict[str, float] = {}
        self.frames += 1
        mouth_face = self.mouth_face(t, face_landmarks)
        if face_landmarks is not None:
            self.face.see(t)
            self._last_face, self._last_face_t = face_landmarks, t
        if hands:
            self.hand.see(t)
        if jaw_open is not None:
            self.max_jaw_open = max(self.max_jaw_open or 0.0, jaw_open)
            if jaw_open >= MOUTH_OPEN_MIN_JAW_OPEN:
                self.mouth_open.see(t)
                seen["mouth_open"] = float(jaw_open)
        if mouth_face is not None:
            self.frames_mouth_known += 1
            if hands:
                d = min(hand_mouth_distance(mouth_face, h) for h in hands)
                if self.closest_hand_mouth is None or d < self.closest_hand_mouth:
                    self.closest_hand_mouth = d
                if d <= HAND_TO_MOUTH_MAX_DISTANCE:
                    self.hand_to_mouth.see(t)
                    seen["hand_to_mouth"] = 1.0 - d
        return seen

    def add_detections(self, t: float, detections: list[Detection], mouth_face: np.ndarray | None,
                       mouth_checked: bool = False, jaw_open: float | None = None) -> dict[str, float]:
        """Detections (frame pixels) in the crops of one frame; `mouth_face` as from `mouth_face()`;
        `mouth_checked` when the detector looked at the mouth, `jaw_open` this frame's jawOpen."""
        seen: dict[str, float] = {}
        self.frames_pill_checked += 1
        box = mouth_box(mouth_face) if mouth_face is not None else None
        in_mouth = 0.0
        for det in detections:
            if det.role == "pill_on_tongue" or (det.role == "pill" and box is not None and _inside(det.centre, box)):
                self.pill_in_mouth.see(t, det.score)
                in_mouth = max(in_mouth, det.score)
                seen["pill_in_mouth"] = max(seen.get("pill_in_mouth", 0.0), det.score)
            elif det.role == "pill":
                self.pill.see(t, det.score)
                seen["pill_visible"] = max(seen.get("pill_visible", 0.0), det.score)
                if (self.pill_in_mouth.last_seen_s is not None
                        and t >= self.pill_in_mouth.last_seen_s + PILL_REMOVED_AFTER_S):
                    self.pill_after_mouth.see(t, det.score)
        if mouth_checked and not in_mouth and (jaw_open or 0.0) >= MOUTH_OPEN_MIN_JAW_OPEN:
            # open wide enough to see inside (landmarks), and the detector saw no pill in it
            self.empty_mouth.see(t)
            if self.pill_in_mouth.first_seen_s is not None and t > self.pill_in_mouth.first_seen_s:
                self.empty_after.see(t)
                seen["mouth_empty_after"] = float(jaw_open)
        return seen

    def result(self) -> dict:
        steps = {**self._landmark_steps(), **self._pill_steps()}
        ordered = [steps[name] for name in STEP_NAMES]
        confidence = sum(s["confidence"] or 0.0 for s in ordered if s["observed"]) / len(STEP_NAMES)
        status, reason = self._verdict()
        score = None
        if self.pill_detector and self.face.frames:
            score = round(sum(STEP_WEIGHTS[s["step"]] * (s["confidence"] or 0.0) for s in ordered if s["observed"])
                          / sum(STEP_WEIGHTS.values()), 3)
        return {
            "pill_detected": (self.pill.frames + self.pill_in_mouth.frames > 0) if self.pill_detector else None,
            "hand_detected": self.hand.frames > 0,
            "face_detected": self.face.frames > 0,
            "compliance_score": score,
            "confidence": round(confidence, 3),
            "verification_status": status,
            "assessed": self.pill_detector,
            "steps": ordered,
            "reason": reason,
            "pill_detector": dict(self.detector) if self.detector else dict(NO_DETECTOR_BLOCK),
            "frames_checked_for_pills": self.frames_pill_checked if self.pill_detector else None,
            "thresholds": {
                "hand_to_mouth_max_face_widths": HAND_TO_MOUTH_MAX_DISTANCE,
                "mouth_open_min_jaw_open": MOUTH_OPEN_MIN_JAW_OPEN,
                "firm_evidence_frames": STEP_FIRM_FRAMES,
            },
        }

    def _landmark_steps(self) -> dict[str, dict]:
        """The steps MediaPipe's landmarks show: face and hand in view, hand to mouth, mouth open."""
        n = self.frames
        steps = {
            "face_in_view": _observed_step("face_in_view", self.face, n, "a face"),
            "hand_in_view": _observed_step("hand_in_view", self.hand, n, "a hand"),
        }
        if self.face.frames == 0:
            steps["hand_to_mouth"] = _unassessable(
                "hand_to_mouth", "cannot assess: no face was visible, so the mouth was never located")
            steps["mouth_open"] = _unassessable("mouth_open", "cannot assess: no face was visible")
        else:
            closest = ("" if self.closest_hand_mouth is None
                       else f"; closest approach {self.closest_hand_mouth:.2f} face widths")
            steps["hand_to_mouth"] = _observed_step(
                "hand_to_mouth", self.hand_to_mouth, self.frames_mouth_known,
                f"a fingertip within {HAND_TO_MOUTH_MAX_DISTANCE:.2f} face widths of the lips", closest)
            jaw = "" if self.max_jaw_open is None else f"; largest jawOpen {self.max_jaw_open:.2f}"
            steps["mouth_open"] = _observed_step(
                "mouth_open", self.mouth_open, self.face.frames,
                f"jawOpen at or above {MOUTH_OPEN_MIN_JAW_OPEN:.2f}", jaw)
        return steps

    def _pill_steps(self) -> dict[str, dict]:
        """The steps only a pill detector can show (not assessed without one)."""
        steps: dict[str, dict] = {}
        if not self.pill_detector:
            return {name: _unassessable(name, NO_PILL_NOTE) for name in PILL_STEPS}
        k = self.frames_pill_checked
        caveat = f" ({self.detector['note']})" if self.detector.get("note") else ""
        steps["pill_visible"] = _observed_step("pill_visible", self.pill, k, "a pill outside the mouth",
                                               caveat, scored=True)
        steps["pill_in_mouth"] = _observed_step("pill_in_mouth", self.pill_in_mouth, k,
                                                "a pill in the mouth", caveat, scored=True)
        if self.pill_in_mouth.frames == 0:
            before = (f"; an empty open mouth was shown at {self.empty_mouth.first_seen_s:.1f} s"
                      if self.empty_mouth.frames else "")
            steps["mouth_empty_after"] = {
                "step": "mouth_empty_after", "observed": False, "first_seen_s": None, "confidence": None,
                "note": f"cannot follow a swallow: the pill was never seen in the mouth{before}{caveat}"}
        else:
            steps["mouth_empty_after"] = _observed_step(
                "mouth_empty_after", self.empty_after, k,
                f"the mouth open (landmarks) with no pill in it after {self.pill_in_mouth.first_seen_s:.1f} s",
                caveat)
        return steps

    def _verdict(self) -> tuple[str, str]:
        status, reason = self._status()
        if self.pill_detector and self.detector.get("note"):
            reason += f" (pill detector: {self.detector['note']})"
        return status, reason

    def _status(self) -> tuple[str, str]:
        observed = self._observations()
        if not self.pill_detector:
            return "not_assessed", f"{NO_DETECTOR_REASON}; {observed}"
        if self.frames == 0:
            return "inconclusive", "no frames were analysed"
        if self.face.frames == 0:
            return "inconclusive", ("intake cannot be verified: " + observed)
        if self.pill_after_mouth.frames and not (
                self.empty_after.frames and self.empty_after.last_seen_s > self.pill_after_mouth.last_seen_s):
            return "non_compliant", (
                f"the pill was in the mouth at {self.pill_in_mouth.first_seen_s:.1f} s and seen outside the mouth "
                f"again at {self.pill_after_mouth.first_seen_s:.1f} s, with no empty mouth shown afterwards; "
                + observed)
        if self.pill_in_mouth.frames and self.empty_after.frames:
            return "compliant", (
                f"the pill was in the mouth at {self.pill_in_mouth.first_seen_s:.1f} s and the mouth was shown "
                f"open and empty at {self.empty_after.first_seen_s:.1f} s; " + observed)
        if self.pill.frames and not self.pill_in_mouth.frames and self.empty_mouth.frames:
            return "non_compliant", (
                f"a pill was shown at {self.pill.first_seen_s:.1f} s and the mouth was shown empty at "
                f"{self.empty_mouth.first_seen_s:.1f} s, but the pill was never seen in the mouth; " + observed)
        missing = []
        if not self.pill.frames and not self.pill_in_mouth.frames:
            missing.append(f"no pill was seen in the {self.frames_pill_checked} frames checked for pills")
        if self.pill.frames and not self.pill_in_mouth.frames:
            missing.append("the pill was never seen in the mouth")
        if self.pill_in_mouth.frames and not self.empty_after.frames:
            missing.append("the mouth was not shown open and empty after the pill was in it")
        return "inconclusive", "intake cannot be verified: " + "; ".join(missing) + "; " + observed

    def _observations(self) -> str:
        if self.frames == 0:
            return "no frames were analysed"
        if self.face.frames == 0:
            seen = (f"a hand was seen at {self.hand.first_seen_s:.1f} s" if self.hand.frames
                    else "no hand was seen either")
            return (f"no face was visible in any of the {self.frames} analysed frames, "
                    f"so the patient cannot be identified with the intake ({seen})")
        parts = [f"the face was seen from {self.face.first_seen_s:.1f} s ({self.face.frames}/{self.frames} frames)"]
        if self.hand.frames:
            parts.append(f"a hand from {self.hand.first_seen_s:.1f} s")
        else:
            parts.append("no hand was seen")
        if self.pill_detector and self.pill.frames:
            parts.append(f"a pill from {self.pill.first_seen_s:.1f} s")
        if self.hand_to_mouth.frames:
            parts.append(f"the hand reached the mouth at {self.hand_to_mouth.first_seen_s:.1f} s")
        elif self.hand.frames:
            parts.append("the hand never reached the mouth")
        if self.mouth_open.frames:
            parts.append(f"the mouth opened at {self.mouth_open.first_seen_s:.1f} s")
        else:
            parts.append("the mouth was never seen wide open")
        return ", ".join(parts)


def _observed_step(name: str, step: _Step, assessable_frames: int, what: str, detail: str = "",
                   scored: bool = False) -> dict:
    if step.frames:
        note = f"{what} in {step.frames} of {assessable_frames} frames{detail}"
        strength = min(1.0, step.frames / STEP_FIRM_FRAMES) * (step.best_score if scored else 1.0)
        if scored:
            note += f"; best detection score {step.best_score:.2f}"
        return {"step": name, "observed": True, "first_seen_s": round(step.first_seen_s, 2),
                "confidence": round(strength, 3), "note": note}
    return {"step": name, "observed": False, "first_seen_s": None, "confidence": None,
            "note": f"{what} in none of {assessable_frames} frames{detail}"}


def _unassessable(name: str, note: str) -> dict:
    return {"step": name, "observed": None, "first_seen_s": None, "confidence": None, "note": note}
