"""Vision analysis of a check-in video: facial emotion, video markers, intake steps.

Pure analysis code (no queues, no AWS): the vision worker calls
`VisionAnalyser.analyse` from an executor thread; a benchmark or a notebook can
call it the same way.

Pipeline (`VisionAnalyser._analyse`):
1. `_scan`: the file is decoded once on a background thread and frames are
   sampled every 1/sample_fps s (evenly spread, at most max_frames). Each
   sampled frame goes through MediaPipe's face landmarker (up to 4 faces, with
   blendshapes and the head's transformation matrix) and hand landmarker (up
   to 2 hands). The patient is taken to be the largest face: its crop, its
   quality (quality.py: size, brightness, head turn, covered) and its
   blendshapes are kept; the intake steps are fed from the landmarks
   (compliance.py) and, with a pill detector, crops around the mouth and the
   fingertips are queued for it (pills.py) and checked in batches.
2. `_read_emotions`: the face crops (turned upright by the eyes, emotion.FaceReading)
   are classified in batches (emotion.py); a frame whose head is turned away, or
   whose reading is less confident than MIN_VOTE_CONFIDENCE, does not vote.
3. `_facial_emotion`, `_video_markers`, `_compliance`: the three parts of the
   result, each saying what it rests on and why a part was not assessed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from services.vision import video_markers as vm
from services.vision.compliance import ComplianceTracker, mouth_box
from services.vision.dosing import ClipSink, DosingEvidence, cut_clip, face_continuity, plan_clip
from services.vision.emotion import (
    EMOTIONS,
    MIN_VOTE_CONFIDENCE,
    MIN_VOTE_CONFIDENCE_COVERED,
    EmotionClassifier,
    EnsembleEmotion,
    FaceApiEmotion,
    FaceReading,
    validation_for,
)
from services.vision.evidence import EvidenceCollector, EvidenceSink
from services.vision.frames import FrameSampler, SampledFrame, open_video, plan_sampling
from services.vision.landmarks import FaceObservation, HandObservation, LandmarkModels
from services.vision.pills import Crop, PillDetector, fingertip_crop, mouth_crop
from services.vision.quality import FaceQuality, assess, video_flags
from shared.domain.errors import InputError
from shared.domain.timeline import NO_TIMELINE_REASON, CheckinTimeline, windows

# The detector looks at the mouth from this jawOpen on (a pill goes in before the mouth is
# wide open), and at the fingertips of every hand in view.
PILL_CHECK_MIN_JAW_OPEN = 0.15
# Below this median brightness (0-255) the video is reported as very dark, since
# the landmarkers then miss faces and hands and "no face" may only mean "no light".
DARK_MEDIAN_BRIGHTNESS = 40
MAX_TIMELINE_POINTS = 120
# With a timeline that has dosing steps, the hand model (about three times the face model's
# cost) runs on every frame of the dosing windows, widened by HANDS_WINDOW_MARGIN_S each side for
# a hand already on its way. Outside them hands matter only to the hand-over-face check
# (quality.py), so there it looks every HANDS_PROBE_EVERY-th frame until it sees a hand, and then
# on every frame until none has been seen for HANDS_LINGER_S: a hand is in view (at the frame's
# edge, on its way) before it covers the face. `python -m bench.vision --hands-schedule` measures
# what this changes.
HANDS_WINDOW_MARGIN_S = 0.5
HANDS_PROBE_EVERY = 4
HANDS_LINGER_S = 1.0
# The hand model works this many sampled frames ahead of the face model (LandmarkSession.run_ahead), so
# that the dearer of the two never waits for the other; each held frame is one decoded image.
HANDS_AHEAD_FRAMES = 4
# multiple_faces is reported when a second face is seen in at least this share
# of the frames with a face (and at least 2 frames), so one spurious detection
# (a face on a poster, a reflection) does not raise it.
MULTIPLE_FACES_MIN_SHARE = 0.10

ProgressCallback = Callable[[float, str], None]


@dataclass
class FaceFrame:
    """The patient's face in one sampled frame."""

    t: float
    crop: np.ndarray
    blendshapes: dict[str, float]
    rotation: np.ndarray | None
    quality: FaceQuality


@dataclass
class PillCheck:
    """One frame's crops waiting for the pill detector."""

    t: float
    rgb: np.ndarray
    mouth_face: np.ndarray | None
    hands: list[np.ndarray]
    jaw_open: float | None
    crops: list[Crop]


@dataclass
class VideoScan:
    """What the frame-by-frame pass collects."""

    tracker: ComplianceTracker
    collector: EvidenceCollector | None
    faces: list[FaceFrame] = field(default_factory=list)
    analysed: int = 0
    frames_with_multiple_faces: int = 0
    max_faces: int = 0
    brightness: list[float] = field(default_factory=list)
    pending: list[PillCheck] = field(default_factory=list)
    dosing: DosingEvidence | None = None  # with a timeline: one frame per dosing step, from its window
    face_counts: list[tuple[float, int]] = field(default_factory=list)  # (t, faces seen) per sampled frame
    hand_spans: list[tuple[float, float]] | None = None  # the dosing windows (None: every frame)
    frames_looked_for_hands: int = 0
    # The schedule's state, read and written on the hands thread only (landmarks.HandSchedule).
    last_hand_t: float | None = None
    frames_since_hand_look: int = HANDS_PROBE_EVERY - 1  # the first frame is looked at

    def wants_hands(self, t: float) -> bool:
        """Whether the hand model looks at the frame at `t` (see HANDS_PROBE_EVERY); asked once per frame,
        in time order, after the frames before it were looked at."""
        look = (self.hand_spans is None or any(start <= t < end for start, end in self.hand_spans)
                or (self.last_hand_t is not None and t - self.last_hand_t <= HANDS_LINGER_S)
                or self.frames_since_hand_look + 1 >= HANDS_PROBE_EVERY)
        self.frames_since_hand_look = 0 if look else self.frames_since_hand_look + 1
        return look

    def saw_hands(self, t: float) -> None:
        self.last_hand_t = t

    def hands_looked_for(self) -> dict:
        """Where the hand model ran, so that a hand-to-mouth count says what it rests on."""
        where = ("every sampled frame" if self.hand_spans is None else
                 f"every frame of the dosing windows of the timeline (+-{HANDS_WINDOW_MARGIN_S} s); elsewhere "
                 f"every {HANDS_PROBE_EVERY}th frame, and every frame while a hand was seen in the last "
                 f"{HANDS_LINGER_S:.0f} s")
        return {"frames": self.frames_looked_for_hands, "of_frames": self.analysed, "where": where}


@dataclass
class Readings:
    """The emotion of each face frame, and which frames vote."""

    probs: np.ndarray  # (face frames, 7)
    votes: np.ndarray  # bool per face frame
    why_not: list[str | None]  # per face frame, why it does not vote (None when it does)

    @property
    def no_vote(self) -> dict[str, int]:
        """Why frames did not vote: reason -> frames."""
        counts: dict[str, int] = {}
        for why in self.why_not:
            if why is not None:
                counts[why] = counts.get(why, 0) + 1
        return counts


class VisionAnalyser:
    """Loads the models once; `analyse` one video at a time (calls are serialised)."""

    def __init__(self, face_landmarker_path: Path, hand_landmarker_path: Path, emotion_model_path: Path | None,
                 *, face_expression_model_path: Path | None = None, sample_fps: float = 5.0,
                 max_frames: int = 600, emotion=None, pill_detector: PillDetector | None = None,
                 batch_size: int = 8) -> None:
        """`emotion`: an emotion backend (EnsembleEmotion, EmotionClassifier or DeepFaceEmotion); without
        one, fer's model (`emotion_model_path`) and, when given, face-api's (`face_expression_model_path`)
        are loaded and averaged with the mirrored face. `pill_detector`: None for no pill steps."""
        if not sample_fps > 0:
            raise ValueError(f"sample_fps must be positive, not {sample_fps!r}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {max_frames!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size!r}")
        self.sample_fps = float(sample_fps)
        self.max_frames = int(max_frames)
        self.batch_size = int(batch_size)
        self._landmarks = LandmarkModels(Path(face_landmarker_path), Path(hand_landmarker_path))
        if emotion is None:
            members = [EmotionClassifier(Path(emotion_model_path))]
            if face_expression_model_path is not None:
                members.append(FaceApiEmotion(Path(face_expression_model_path)))
            emotion = EnsembleEmotion(members)
        self.emotion = emotion
        self.reading = FaceReading()  # emotion.py: the face turned upright by the eyes before the networks
        self._pills = pill_detector
        self._lock = threading.Lock()
        self.models = {
            "face": f"MediaPipe FaceLandmarker {self._landmarks.face_path.name} (sha256 {self._landmarks.face_digest})",
            "hands": f"MediaPipe HandLandmarker {self._landmarks.hand_path.name} (sha256 {self._landmarks.hand_digest})",
            "emotion": self.emotion.describe(),
        }
        if self._pills is not None:
            self.models["pills"] = self._pills.describe()

    def analyse(self, video_path: Path, on_progress: ProgressCallback | None = None,
                evidence: EvidenceSink | None = None, timeline: CheckinTimeline | None = None,
                clip: ClipSink | None = None, pill_detector: PillDetector | None = None) -> dict:
        """Analyse one video. Raises InputError when the file is not a decodable video.

        `pill_detector`, when given, replaces the deployment's for this video (a clinic's own, live detector).

        `evidence(name, jpeg) -> reference`, when given, stores the annotated
        frame that best shows each intake step; the references are in the result.
        `timeline` (shared.domain.timeline): each dosing step is looked for in its window, one frame each
        (services/vision/dosing.py). `clip(name, mp4) -> reference` stores the review clip.

        `on_progress(fraction, message)` is called about every 10% of the sampled
        frames and once at the end; an exception it raises aborts the analysis
        (the worker can use that to cancel).
        """
        with self._lock:
            if self.emotion is None:
                raise RuntimeError("this VisionAnalyser has been closed")
            if pill_detector is None:
                return self._analyse(Path(video_path), on_progress, evidence, timeline, clip)
            # a clinic's own detector (services/vision/clinic_detectors.py) for this video only
            deployment, self._pills = self._pills, pill_detector
            self.models["pills"] = pill_detector.describe()
            try:
                return self._analyse(Path(video_path), on_progress, evidence, timeline, clip)
            finally:
                self._pills = deployment
                if deployment is not None:
                    self.models["pills"] = deployment.describe()
                else:
                    self.models.pop("pills", None)

    # ------------------------------------------------------------------

    def _analyse(self, path: Path, on_progress: ProgressCallback | None, sink: EvidenceSink | None,
                 timeline: CheckinTimeline | None = None, clip: ClipSink | None = None) -> dict:
        started = time.perf_counter()
        scan, sampler, fps = self._scan(path, on_progress, collect_evidence=sink is not None, timeline=timeline)
        stats = sampler.stats
        duration = stats.last_t + (1.0 / fps if fps else 0.0)
        interval = duration / scan.analysed
        readings = self._read_emotions(scan.faces)
        return {
            "facial_emotion": self._facial_emotion(scan, readings),
            "video_markers": self._video_markers(scan, readings, interval),
            "compliance": self._compliance(scan, sink, path, duration, timeline, clip),
            "frames_analysed": scan.analysed,
            "duration_seconds": round(duration, 3),
            "fps": round(float(fps), 3) if fps else None,
            "width": int(stats.width),
            "height": int(stats.height),
            "models": dict(self.models),
            "sampling": {
                "requested_fps": self.sample_fps,
                "effective_fps": round(scan.analysed / duration, 3) if duration > 0 else None,
                "max_frames": self.max_frames,
                "frames_decoded": stats.frames_decoded,
            },
            "warnings": list(stats.warnings) + _darkness_warning(scan.brightness),
            "analysis_seconds": round(time.perf_counter() - started, 3),
        }

    def _scan(self, path: Path, on_progress: ProgressCallback | None, collect_evidence: bool,
              timeline: CheckinTimeline | None = None) -> tuple[VideoScan, FrameSampler, float | None]:
        """Every sampled frame through the landmarkers (and the pill detector's queue), in time order."""
        cap, info = open_video(path)
        interval, expected = plan_sampling(info, self.sample_fps, self.max_frames)
        detector = self._pills.provenance.as_block(self._pills.path.name) if self._pills is not None else None
        note = detector["note"] if detector else None
        scan = VideoScan(ComplianceTracker(detector), EvidenceCollector(note) if collect_evidence else None)
        scan.dosing = DosingEvidence(timeline, note) if timeline is not None else None
        scan.hand_spans = _hand_spans(timeline)
        sampler = FrameSampler(cap, info, interval, self.max_frames)
        next_decile = 1  # report when the fraction reaches the next tenth
        with sampler, self._landmarks.open_session() as session:
            for frame, faces, hands in session.run_ahead(sampler, scan, HANDS_AHEAD_FRAMES):
                self._observe(frame, faces, hands, scan)
                if on_progress is not None:
                    total = expected or self.max_frames
                    fraction = min(scan.analysed / total, 0.99)
                    if fraction * 10 + 1e-9 >= next_decile:
                        on_progress(round(fraction, 3), f"analysed {scan.analysed}/{max(total, scan.analysed)} frames")
                        next_decile = int(fraction * 10 + 1e-9) + 1
        self._check_pills(scan)
        if scan.analysed == 0:
            raise InputError("the video contains no frames that could be decoded")
        if on_progress is not None:
            on_progress(1.0, f"analysed {scan.analysed}/{scan.analysed} frames")
        fps = info.fps
        if fps is None and sampler.stats.last_t > 0:
            fps = (sampler.stats.frames_decoded - 1) / sampler.stats.last_t
        return scan, sampler, fps

    def _observe(self, frame: SampledFrame, faces: list[FaceObservation], looked_at: list[HandObservation] | None,
                 scan: VideoScan) -> None:
        """One sampled frame: the patient's face, the hands (None: not looked for), the intake steps, the
        pill crops."""
        hands = looked_at or []
        scan.analysed += 1
        scan.frames_looked_for_hands += looked_at is not None
        scan.max_faces = max(scan.max_faces, len(faces))
        scan.frames_with_multiple_faces += len(faces) > 1
        scan.face_counts.append((frame.t, len(faces)))
        scan.brightness.append(float(frame.rgb[::16, ::16].mean()))
        primary = max(faces, key=lambda f: f.area) if faces else None
        hand_lms = [h.landmarks for h in hands]
        if primary is not None:
            try:
                crop = self.reading.crop(frame.rgb, primary.landmarks, primary.bbox)
            except ValueError:  # the box lies outside the frame
                crop = None
            if crop is not None:
                quality = assess(frame.rgb, primary.landmarks, primary.bbox, primary.rotation, hand_lms)
                scan.faces.append(FaceFrame(frame.t, crop, primary.blendshapes, primary.rotation, quality))
        face_lms = primary.landmarks if primary is not None else None
        jaw = primary.blendshapes.get("jawOpen") if primary is not None else None
        tracker = scan.tracker
        mouth_face = tracker.mouth_face(frame.t, face_lms)  # before `add` records this frame's face
        seen = tracker.add(frame.t, face_lms, jaw, hand_lms)
        if scan.dosing is not None:
            scan.dosing.offer_frame(frame.t, frame.rgb, seen, [], _landmark_boxes(mouth_face, hand_lms),
                                    hands=bool(hand_lms), jaw_open=jaw)
        elif scan.collector is not None:
            for step, strength in seen.items():
                scan.collector.offer(step, strength, frame.t, frame.rgb, [], _landmark_boxes(mouth_face, hand_lms))
        if self._pills is not None:
            crops = [fingertip_crop(frame.rgb, hand, self._pills.imgsz) for hand in hand_lms]
            if mouth_face is not None and (jaw or 0.0) >= PILL_CHECK_MIN_JAW_OPEN:
                crops.insert(0, mouth_crop(frame.rgb, mouth_face, self._pills.imgsz))
            if crops:
                scan.pending.append(PillCheck(frame.t, frame.rgb, mouth_face, hand_lms, jaw, crops))
                if sum(len(p.crops) for p in scan.pending) >= self.batch_size:
                    self._check_pills(scan)

    def _check_pills(self, scan: VideoScan) -> None:
        """Run the queued crops through the pill detector in one batch and feed the tracker in time order."""
        if not scan.pending:
            return
        checks = list(scan.pending)
        scan.pending.clear()
        crops = [c for check in checks for c in check.crops]
        found = iter(self._pills.detect_batch([c.image for c in crops]))
        for check in checks:
            detections = [d.placed(c) for c in check.crops for d in next(found)]
            mouth_checked = any(c.kind == "mouth" for c in check.crops)
            seen = scan.tracker.add_detections(check.t, detections, check.mouth_face, mouth_checked, check.jaw_open)
            if scan.dosing is not None:
                scan.dosing.offer_frame(check.t, check.rgb, seen, detections,
                                        _landmark_boxes(check.mouth_face, check.hands))
            elif scan.collector is not None:
                for step, strength in seen.items():
                    scan.collector.offer(step, strength, check.t, check.rgb, detections,
                                         _landmark_boxes(check.mouth_face, check.hands))

    def _read_emotions(self, faces: list[FaceFrame]) -> Readings:
        crops = [f.crop for f in faces]
        probs = np.zeros((0, len(EMOTIONS)))
        if crops:
            probs = np.vstack([self.emotion.classify_batch(crops[start:start + self.batch_size])
                               for start in range(0, len(crops), self.batch_size)])
        why_not: list[str | None] = []
        for i, face in enumerate(faces):
            why = face.quality.unreadable
            if why is None and face.quality.covered and probs[i].max() < MIN_VOTE_CONFIDENCE_COVERED:
                why = "partly_covered"
            if why is None and probs[i].max() < MIN_VOTE_CONFIDENCE:
                why = "low_confidence"
            why_not.append(why)
        return Readings(probs, np.array([w is None for w in why_not], dtype=bool), why_not)

    def _facial_emotion(self, scan: VideoScan, readings: Readings) -> dict:
        faces, analysed = scan.faces, scan.analysed
        with_face = len(faces)
        multiple = scan.frames_with_multiple_faces >= max(2, MULTIPLE_FACES_MIN_SHARE * with_face)
        voting = int(readings.votes.sum())
        result: dict = {
            "primary_emotion": None,
            "confidence": None,
            "all_emotions": [],
            "face_detected": with_face > 0,
            "frame_count": analysed,
            "assessed": False,
            "method": self.emotion.method,
            "reading_method": self.reading.describe(),
            "models": self.models["emotion"],
            "validation": validation_for(self.emotion.name),
            "reason": None,
            "timeline": [],
            "frames_with_face": with_face,
            "frames_with_reading": voting,
            "frames_without_reading": dict(readings.no_vote),
            "min_reading_confidence": MIN_VOTE_CONFIDENCE,
            "face_coverage": round(with_face / analysed, 3),
            "median_face_width_px": (round(float(np.median([f.quality.width_px for f in faces])), 1)
                                     if faces else None),
            "quality_flags": video_flags([f.quality for f in faces]),
            "multiple_faces": multiple,
            "frames_with_multiple_faces": scan.frames_with_multiple_faces,
            "max_faces_in_frame": scan.max_faces,
            "note": None,
        }
        if multiple:
            result["note"] = (f"up to {scan.max_faces} faces were visible in {scan.frames_with_multiple_faces} "
                              "frames; the largest face was taken to be the patient's")
        result["timeline"] = _timeline(faces, readings)
        if not with_face:
            result["reason"] = f"no face was visible in any of the {analysed} analysed frames"
            return result
        if not voting:
            result["reason"] = _no_reading_reason(with_face, readings.no_vote)
            return result
        mean = readings.probs[readings.votes].mean(axis=0)
        order = np.argsort(-mean, kind="stable")
        result["all_emotions"] = [{"emotion": EMOTIONS[i], "confidence": round(float(mean[i]), 3)} for i in order]
        result["primary_emotion"] = EMOTIONS[order[0]]
        result["confidence"] = round(float(mean[order[0]]), 3)
        result["assessed"] = True
        return result

    def _video_markers(self, scan: VideoScan, readings: Readings, interval: float) -> dict:
        faces = scan.faces
        flags = video_flags([f.quality for f in faces])
        face_seconds = len(faces) * interval
        labels = [EMOTIONS[int(i)] for i in readings.probs[readings.votes].argmax(axis=1)] if len(faces) else []
        no_reading = (_no_reading_reason(len(faces), readings.no_vote) if faces
                      else f"no face was visible in any of the {scan.analysed} analysed frames")
        view_flags = ["video_dark"] if _darkness_warning(scan.brightness) else []
        return {
            "facial_expressivity": vm.facial_expressivity([f.blendshapes for f in faces], face_seconds, flags),
            "positive_expression_share": vm.positive_expression_share(labels, len(labels) * interval,
                                                                      self.emotion.name, flags, no_reading),
            "head_movement": vm.head_movement([f.t for f in faces], [f.rotation for f in faces], interval, flags),
            "face_in_view_share": vm.face_in_view_share(len(faces), scan.analysed, view_flags),
        }

    def _compliance(self, scan: VideoScan, sink: EvidenceSink | None, path: Path, duration: float,
                    timeline: CheckinTimeline | None, clip: ClipSink | None) -> dict:
        compliance = scan.tracker.result()
        compliance["hands_looked_for"] = scan.hands_looked_for()
        compliance["evidence_frames"] = []
        final = windows(timeline, duration) if timeline is not None else None
        if scan.dosing is not None:
            frames, dosing_steps = scan.dosing.save(sink, duration)
            compliance["evidence_frames"] = frames
            compliance["dosing_steps"] = dosing_steps
            by_cue = {frame["step"]: frame["key"] for frame in frames}
            for step in compliance["steps"]:
                step["evidence_frame"] = by_cue.get(step["step"])
        elif scan.collector is not None:
            saved = scan.collector.save(sink)
            compliance["evidence_frames"] = [{"step": step, "step_id": None, **info} for step, info in saved.items()]
            for step in compliance["steps"]:
                step["evidence_frame"] = saved.get(step["step"], {}).get("key")
        compliance["timeline"] = ({"used": True, "flags": list(final.flags)} if final is not None
                                  else {"used": False, "reason": NO_TIMELINE_REASON})
        plan = plan_clip(final, scan.tracker.hand_to_mouth.first_seen_s, duration)
        span = (plan["start_s"], plan["end_s"]) if "start_s" in plan else None
        compliance["review_clip"] = self._review_clip(path, plan, clip)
        compliance["face_continuity"] = face_continuity(
            span, plan.get("source"), scan.face_counts, [(f.t, f.crop, f.quality.covered) for f in scan.faces])
        return compliance

    @staticmethod
    def _review_clip(path: Path, plan: dict, clip: ClipSink | None) -> dict:
        if "start_s" not in plan:
            return {"key": None, **plan}
        if clip is None:
            return {"key": None, **plan, "reason": "no clip store was given to this analysis"}
        key = clip("review_clip.mp4", cut_clip(path, plan["start_s"], plan["end_s"]))
        return {"key": key, **plan}

    def close(self) -> None:
        """Release the emotion models (landmarkers are closed after each video)."""
        self.emotion = None  # type: ignore[assignment]

    def __enter__(self) -> "VisionAnalyser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


NO_READING_WORDS = {"turned_away": "the head was turned away", "low_confidence": "the expression was ambiguous",
                    "partly_covered": "the face was partly covered"}


def _no_reading_reason(with_face: int, no_vote: dict[str, int]) -> str:
    why = ", ".join(f"{NO_READING_WORDS.get(k, k)} in {n}" for k, n in sorted(no_vote.items()))
    return (f"a face was seen in {with_face} frames but none gave a confident emotion reading ({why}); "
            "no emotion is reported rather than a guess")


def _timeline(faces: list[FaceFrame], readings: Readings) -> list[dict]:
    """Up to MAX_TIMELINE_POINTS face frames, evenly spread: each frame's reading, or none and why."""
    if not faces:
        return []
    keep = np.unique(np.linspace(0, len(faces) - 1, min(len(faces), MAX_TIMELINE_POINTS)).round().astype(int))
    points = []
    for i in keep:
        top = int(readings.probs[i].argmax())
        point = {"t": round(faces[i].t, 2), "emotion": None, "confidence": round(float(readings.probs[i, top]), 3)}
        if readings.votes[i]:
            point["emotion"] = EMOTIONS[top]
        else:
            point["no_reading"] = readings.why_not[i]
        if faces[i].quality.flags:
            point["quality_flags"] = list(faces[i].quality.flags)
        points.append(point)
    return points


def _hand_spans(timeline: CheckinTimeline | None) -> list[tuple[float, float]] | None:
    """The dosing windows (widened by HANDS_WINDOW_MARGIN_S), or None (every frame) without a
    timeline or when it has no dosing step: then a hand-to-mouth moment anywhere is the evidence."""
    if timeline is None:
        return None
    dosing = windows(timeline, float("inf")).of_kind("dosing")  # the length is known only after decoding
    if not dosing:
        return None
    return [(w.start_s - HANDS_WINDOW_MARGIN_S, w.end_s + HANDS_WINDOW_MARGIN_S) for w in dosing]


def _darkness_warning(brightness: list[float]) -> list[str]:
    median = float(np.median(brightness)) if brightness else 255.0
    if median >= DARK_MEDIAN_BRIGHTNESS:
        return []
    return [f"the video is very dark (median brightness {median:.0f}/255): faces, hands and pills may be missed, "
            "so what was not seen may simply not have been visible"]


def _landmark_boxes(mouth_face: np.ndarray | None, hands: list[np.ndarray]) -> list[tuple[str, tuple]]:
    """Boxes drawn on evidence frames: the mouth region and the hands MediaPipe found."""
    boxes: list[tuple[str, tuple]] = []
    if mouth_face is not None:
        boxes.append(("mouth", mouth_box(mouth_face)))
    for hand in hands:
        boxes.append(("hand", (float(hand[:, 0].min()), float(hand[:, 1].min()),
                               float(hand[:, 0].max()), float(hand[:, 1].max()))))
    return boxes
