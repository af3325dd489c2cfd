"""Vision analysis of a check-in video: facial emotion, expressivity, intake steps.

Pure analysis code (no queues, no AWS): the vision worker calls
`VisionAnalyser.analyse` from an executor thread; a benchmark or a notebook can
call it the same way.

Pipeline: the file is decoded once on a background thread and frames are
sampled every 1/sample_fps s (evenly spread, at most max_frames). Each sampled
frame goes through MediaPipe's face landmarker (up to 4 faces, with
blendshapes) and hand landmarker (up to 2 hands). The patient is taken to be
the largest face; its landmark box, made square, is cropped and classified by
the emotion backend (fer's tflite model, or deepface's), in batches after the
video has been read. The intake steps are derived from the landmarks and, when
a pill detector is configured, from its detections (see compliance.py); the
detector looks at frames in batches: every frame with a hand or an open mouth,
and the others at `pill_sample_fps`. Without a detector intake is never
verified: the status is "inconclusive" with the reason in words. With an
`EvidenceSink`, the frame that best shows each step is drawn on and stored.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from shared.errors import InputError
from services.vision.compliance import ComplianceTracker, mouth_box
from services.vision.emotion import EMOTIONS, EmotionClassifier, expressivity, face_crop
from services.vision.evidence import EvidenceCollector, EvidenceSink
from services.vision.frames import FrameSampler, open_video, plan_sampling
from services.vision.landmarks import LandmarkModels
from services.vision.pills import PillDetector

EMOTION_METHOD = EmotionClassifier.method
# The detector also looks at every frame where a pill is likely (a hand in
# view, or the mouth at least this open), whatever pill_sample_fps says.
PILL_CHECK_MIN_JAW_OPEN = 0.15
# Below this median brightness (0-255) the video is reported as very dark, since
# the landmarkers then miss faces and hands and "no face" may only mean "no light".
DARK_MEDIAN_BRIGHTNESS = 40
MAX_TIMELINE_POINTS = 120
# multiple_faces is reported when a second face is seen in at least this share
# of the frames with a face (and at least 2 frames), so one spurious detection
# (a face on a poster, a reflection) does not raise it.
MULTIPLE_FACES_MIN_SHARE = 0.10

ProgressCallback = Callable[[float, str], None]


class VisionAnalyser:
    """Loads the models once; `analyse` one video at a time (calls are serialised)."""

    def __init__(self, face_landmarker_path: Path, hand_landmarker_path: Path, emotion_model_path: Path | None,
                 *, sample_fps: float = 5.0, max_frames: int = 600, emotion=None,
                 pill_detector: PillDetector | None = None, pill_sample_fps: float = 2.5,
                 batch_size: int = 8) -> None:
        """`emotion`: an emotion backend (EmotionClassifier or DeepFaceEmotion); without one,
        fer's model is loaded from `emotion_model_path`. `pill_detector`: None for no pill steps."""
        if not sample_fps > 0:
            raise ValueError(f"sample_fps must be positive, not {sample_fps!r}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {max_frames!r}")
        self.sample_fps = float(sample_fps)
        self.max_frames = int(max_frames)
        self._landmarks = LandmarkModels(Path(face_landmarker_path), Path(hand_landmarker_path))
        if not pill_sample_fps > 0:
            raise ValueError(f"pill_sample_fps must be positive, not {pill_sample_fps!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size!r}")
        self.pill_sample_fps = float(pill_sample_fps)
        self.batch_size = int(batch_size)
        self._emotion = emotion if emotion is not None else EmotionClassifier(Path(emotion_model_path))
        self._pills = pill_detector
        self._lock = threading.Lock()
        self.models = {
            "face": f"MediaPipe FaceLandmarker {self._landmarks.face_path.name} (sha256 {self._landmarks.face_digest})",
            "hands": f"MediaPipe HandLandmarker {self._landmarks.hand_path.name} (sha256 {self._landmarks.hand_digest})",
            "emotion": self._emotion.describe(),
        }
        if self._pills is not None:
            self.models["pills"] = self._pills.describe()

    def analyse(self, video_path: Path, on_progress: ProgressCallback | None = None,
                evidence: EvidenceSink | None = None) -> dict:
        """Analyse one video. Raises InputError when the file is not a decodable video.

        `evidence(name, jpeg) -> reference`, when given, stores the annotated
        frame that best shows each intake step; the references are in the result.

        `on_progress(fraction, message)` is called about every 10% of the sampled
        frames and once at the end; an exception it raises aborts the analysis
        (the worker can use that to cancel).
        """
        with self._lock:
            if self._emotion is None:
                raise RuntimeError("this VisionAnalyser has been closed")
            return self._analyse(Path(video_path), on_progress, evidence)

    # ------------------------------------------------------------------

    def _analyse(self, path: Path, on_progress: ProgressCallback | None, sink: EvidenceSink | None) -> dict:
        started = time.perf_counter()
        cap, info = open_video(path)
        interval, expected = plan_sampling(info, self.sample_fps, self.max_frames)

        times: list[float] = []
        crops: list[np.ndarray] = []
        shapes: list[dict[str, float]] = []
        face_widths: list[float] = []  # of the patient's face, as a share of the frame width
        frames_with_multiple_faces = 0
        max_faces = 0
        tracker = ComplianceTracker(pill_detector=self._pills is not None)
        collector = EvidenceCollector() if sink is not None else None
        pending: list[tuple] = []  # frames waiting for the pill detector (one batch)
        next_pill_t = 0.0
        brightness: list[float] = []
        analysed = 0
        next_decile = 1  # report when the fraction reaches the next tenth

        sampler = FrameSampler(cap, info, interval, self.max_frames)
        with sampler, self._landmarks.open_session() as session:
            for frame in sampler:
                faces, hands = session.detect(frame.rgb, frame.t)
                primary = max(faces, key=lambda f: f.area) if faces else None
                max_faces = max(max_faces, len(faces))
                if len(faces) > 1:
                    frames_with_multiple_faces += 1
                if primary is not None:
                    try:
                        crop = face_crop(frame.rgb, primary.bbox)
                    except ValueError:
                        crop = None
                    if crop is not None:
                        times.append(frame.t)
                        crops.append(crop)
                        shapes.append(primary.blendshapes)
                        face_widths.append((primary.bbox[2] - primary.bbox[0]) / frame.rgb.shape[1])
                brightness.append(float(frame.rgb[::16, ::16].mean()))
                face_lms = primary.landmarks if primary is not None else None
                jaw = primary.blendshapes.get("jawOpen") if primary is not None else None
                hand_lms = [h.landmarks for h in hands]
                mouth_face = tracker.mouth_face(frame.t, face_lms)  # before `add` records this frame's face
                seen = tracker.add(frame.t, face_lms, jaw, hand_lms)
                if collector is not None:
                    for step, strength in seen.items():
                        collector.offer(step, strength, frame.t, frame.rgb, [], _landmark_boxes(mouth_face, hand_lms))
                if self._pills is not None and (frame.t + 1e-6 >= next_pill_t or hand_lms
                                                or (jaw or 0.0) >= PILL_CHECK_MIN_JAW_OPEN):
                    if frame.t + 1e-6 >= next_pill_t:
                        next_pill_t = frame.t + 1.0 / self.pill_sample_fps
                    pending.append((frame.t, frame.rgb, mouth_face, hand_lms))
                    if len(pending) >= self.batch_size:
                        self._detect_pills(pending, tracker, collector)
                analysed += 1
                if on_progress is not None:
                    total = expected or self.max_frames
                    fraction = min(analysed / total, 0.99)
                    if fraction * 10 + 1e-9 >= next_decile:
                        on_progress(round(fraction, 3), f"analysed {analysed}/{max(total, analysed)} frames")
                        next_decile = int(fraction * 10 + 1e-9) + 1
        self._detect_pills(pending, tracker, collector)
        stats = sampler.stats
        if analysed == 0:
            raise InputError("the video contains no frames that could be decoded")
        if on_progress is not None:
            on_progress(1.0, f"analysed {analysed}/{analysed} frames")

        fps = info.fps
        if fps is None and stats.last_t > 0:
            fps = (stats.frames_decoded - 1) / stats.last_t
        duration = stats.last_t + (1.0 / fps if fps else 0.0)
        effective_interval = duration / analysed

        probs = [row for start in range(0, len(crops), self.batch_size)
                 for row in self._emotion.classify_batch(crops[start:start + self.batch_size])]
        facial = self._facial_emotion(times, probs, shapes, analysed, effective_interval,
                                      frames_with_multiple_faces, max_faces)
        facial["median_face_width_px"] = (round(float(np.median(face_widths)) * stats.width, 1)
                                          if face_widths else None)
        compliance = tracker.result()
        compliance["evidence_frames"] = []
        if collector is not None:
            saved = collector.save(sink)
            compliance["evidence_frames"] = [{"step": step, **info} for step, info in saved.items()]
            for step in compliance["steps"]:
                step["evidence_frame"] = saved.get(step["step"], {}).get("key")
        elapsed = time.perf_counter() - started
        return {
            "facial_emotion": facial,
            "compliance": compliance,
            "frames_analysed": analysed,
            "duration_seconds": round(duration, 3),
            "fps": round(float(fps), 3) if fps else None,
            "width": int(stats.width),
            "height": int(stats.height),
            "models": dict(self.models),
            "sampling": {
                "requested_fps": self.sample_fps,
                "effective_fps": round(analysed / duration, 3) if duration > 0 else None,
                "max_frames": self.max_frames,
                "frames_decoded": stats.frames_decoded,
            },
            "warnings": list(stats.warnings) + _darkness_warning(brightness),
            "analysis_seconds": round(elapsed, 3),
        }

    def _facial_emotion(self, times: list[float], probs: list[np.ndarray], shapes: list[dict[str, float]],
                        analysed: int, interval: float, multi_frames: int, max_faces: int) -> dict:
        with_face = len(times)
        multiple = multi_frames >= max(2, MULTIPLE_FACES_MIN_SHARE * with_face)
        result: dict = {
            "primary_emotion": None,
            "confidence": None,
            "all_emotions": [],
            "face_detected": with_face > 0,
            "frame_count": analysed,
            "frames_with_face": with_face,
            "face_coverage": round(with_face / analysed, 3),
            "method": self._emotion.method,
            "timeline": [],
            "expressivity": expressivity([], [], interval),
            "multiple_faces": multiple,
            "frames_with_multiple_faces": multi_frames,
            "max_faces_in_frame": max_faces,
            "assessed": with_face > 0,
            "reason": None,
            "note": None,
        }
        if not with_face:
            result["reason"] = f"no face was visible in any of the {analysed} analysed frames"
            return result
        matrix = np.vstack(probs)
        mean = matrix.mean(axis=0)
        order = np.argsort(-mean, kind="stable")
        result["all_emotions"] = [{"emotion": EMOTIONS[i], "confidence": round(float(mean[i]), 3)} for i in order]
        result["primary_emotion"] = EMOTIONS[order[0]]
        result["confidence"] = round(float(mean[order[0]]), 3)
        top = matrix.argmax(axis=1)
        labels = [EMOTIONS[i] for i in top]
        keep = np.unique(np.linspace(0, with_face - 1, min(with_face, MAX_TIMELINE_POINTS)).round().astype(int))
        result["timeline"] = [
            {"t": round(times[i], 2), "emotion": labels[i], "confidence": round(float(matrix[i, top[i]]), 3)}
            for i in keep
        ]
        result["expressivity"] = expressivity(labels, shapes, interval)
        if multiple:
            result["note"] = (f"up to {max_faces} faces were visible in {multi_frames} frames; the largest face "
                                "was taken to be the patient's")
        return result

    def _detect_pills(self, pending: list[tuple], tracker: ComplianceTracker,
                      collector: EvidenceCollector | None) -> None:
        """Run one batch through the pill detector and feed the tracker in time order."""
        if not pending:
            return
        batch = list(pending)
        pending.clear()
        for (t, rgb, mouth_face, hand_lms), detections in zip(batch, self._pills.detect_batch([b[1] for b in batch])):
            seen = tracker.add_detections(t, detections, mouth_face)
            if collector is not None:
                for step, strength in seen.items():
                    collector.offer(step, strength, t, rgb, detections, _landmark_boxes(mouth_face, hand_lms))

    def close(self) -> None:
        """Release the emotion interpreter (landmarkers are closed after each video)."""
        self._emotion = None  # type: ignore[assignment]

    def __enter__(self) -> "VisionAnalyser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
