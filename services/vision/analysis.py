"""Vision analysis of a check-in video: facial emotion, expressivity, intake steps.

Pure analysis code (no queues, no AWS): the vision worker calls
`VisionAnalyser.analyse` from an executor thread; a benchmark or a notebook can
call it the same way.

Pipeline: the file is decoded once on a background thread and frames are
sampled every 1/sample_fps s (evenly spread, at most max_frames). Each sampled
frame goes through MediaPipe's face landmarker (up to 4 faces, with
blendshapes) and hand landmarker (up to 2 hands). The patient is taken to be
the largest face; its landmark box, made square, is cropped and classified by
fer's emotion model. The intake steps are derived from the landmarks (see
compliance.py). Pill detection is not part of this module yet, so intake is
never verified here: the status is "inconclusive" with the reason in words.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np

from shared.errors import InputError
from services.vision.compliance import ComplianceTracker
from services.vision.emotion import EMOTIONS, EmotionClassifier, expressivity, face_crop
from services.vision.frames import FrameSampler, open_video, plan_sampling
from services.vision.landmarks import LandmarkModels

FER_VERSION = "25.10.3"
EMOTION_METHOD = f"fer tflite (fer {FER_VERSION}) on MediaPipe face landmarker crops"
MAX_TIMELINE_POINTS = 120
# multiple_faces is reported when a second face is seen in at least this share
# of the frames with a face (and at least 2 frames), so one spurious detection
# (a face on a poster, a reflection) does not raise it.
MULTIPLE_FACES_MIN_SHARE = 0.10

ProgressCallback = Callable[[float, str], None]


class VisionAnalyser:
    """Loads the models once; `analyse` one video at a time (calls are serialised)."""

    def __init__(self, face_landmarker_path: Path, hand_landmarker_path: Path, emotion_model_path: Path,
                 *, sample_fps: float = 5.0, max_frames: int = 600) -> None:
        if not sample_fps > 0:
            raise ValueError(f"sample_fps must be positive, not {sample_fps!r}")
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, not {max_frames!r}")
        self.sample_fps = float(sample_fps)
        self.max_frames = int(max_frames)
        self._landmarks = LandmarkModels(Path(face_landmarker_path), Path(hand_landmarker_path))
        self._emotion = EmotionClassifier(Path(emotion_model_path))
        self._lock = threading.Lock()
        self.models = {
            "face": f"MediaPipe FaceLandmarker {self._landmarks.face_path.name} (sha256 {self._landmarks.face_digest})",
            "hands": f"MediaPipe HandLandmarker {self._landmarks.hand_path.name} (sha256 {self._landmarks.hand_digest})",
            "emotion": f"fer {FER_VERSION} emotion_model_quantized.tflite via LiteRT, {self._emotion.path.name} "
                       f"(sha256 {self._emotion.digest})",
        }

    def analyse(self, video_path: Path, on_progress: ProgressCallback | None = None) -> dict:
        """Analyse one video. Raises InputError when the file is not a decodable video.

        `on_progress(fraction, message)` is called about every 10% of the sampled
        frames and once at the end; an exception it raises aborts the analysis
        (the worker can use that to cancel).
        """
        with self._lock:
            if self._emotion is None:
                raise RuntimeError("this VisionAnalyser has been closed")
            return self._analyse(Path(video_path), on_progress)

    # ------------------------------------------------------------------

    def _analyse(self, path: Path, on_progress: ProgressCallback | None) -> dict:
        started = time.perf_counter()
        cap, info = open_video(path)
        interval, expected = plan_sampling(info, self.sample_fps, self.max_frames)

        times: list[float] = []
        probs: list[np.ndarray] = []
        shapes: list[dict[str, float]] = []
        face_widths: list[float] = []  # of the patient's face, as a share of the frame width
        frames_with_multiple_faces = 0
        max_faces = 0
        tracker = ComplianceTracker()
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
                        probs.append(self._emotion.classify(crop))
                        shapes.append(primary.blendshapes)
                        face_widths.append((primary.bbox[2] - primary.bbox[0]) / frame.rgb.shape[1])
                tracker.add(frame.t,
                            primary.landmarks if primary is not None else None,
                            primary.blendshapes.get("jawOpen") if primary is not None else None,
                            [h.landmarks for h in hands])
                analysed += 1
                if on_progress is not None:
                    total = expected or self.max_frames
                    fraction = min(analysed / total, 0.99)
                    if fraction * 10 + 1e-9 >= next_decile:
                        on_progress(round(fraction, 3), f"analysed {analysed}/{max(total, analysed)} frames")
                        next_decile = int(fraction * 10 + 1e-9) + 1
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

        facial = self._facial_emotion(times, probs, shapes, analysed, effective_interval,
                                      frames_with_multiple_faces, max_faces)
        facial["median_face_width_px"] = (round(float(np.median(face_widths)) * stats.width, 1)
                                          if face_widths else None)
        elapsed = time.perf_counter() - started
        return {
            "facial_emotion": facial,
            "compliance": tracker.result(),
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
            "warnings": list(stats.warnings),
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
            "method": EMOTION_METHOD,
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

    def close(self) -> None:
        """Release the emotion interpreter (landmarkers are closed after each video)."""
        self._emotion = None  # type: ignore[assignment]

    def __enter__(self) -> "VisionAnalyser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
