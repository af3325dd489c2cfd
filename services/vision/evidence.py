"""Annotated evidence frames: the frame that best shows each intake step, with
the detector's boxes, labels and the timestamp drawn on it, saved as a JPEG so
that a clinician can see why a step was (or was not) counted.

The analyser keeps at most one frame per step (the strongest) while it runs and
hands the rendered JPEGs to an `EvidenceSink`, which stores them and returns
where (the vision worker's sink writes them to S3 next to the job's artifacts).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from services.vision.pills import Detection

# Stores one JPEG under a file name (e.g. "pill_in_mouth.jpg") and returns its reference (an S3 key).
EvidenceSink = Callable[[str, bytes], str]

MAX_SIDE = 960  # evidence frames are scaled down to this long side
JPEG_QUALITY = 85
_COLOURS = {"pill": (255, 200, 0), "pill_on_tongue": (0, 220, 0), "empty_mouth": (0, 160, 255),
            "hand": (200, 200, 200), "mouth": (255, 80, 200), "face": (120, 120, 255)}  # RGB


@dataclass
class _Candidate:
    score: float
    t: float
    rgb: np.ndarray
    detections: list[Detection]
    boxes: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)


class EvidenceCollector:
    """Keeps the strongest frame of each step; `note` (e.g. the detector's "synthetic-trained,
    not validated on real pills") is printed on every frame it renders."""

    def __init__(self, note: str | None = None) -> None:
        self._best: dict[str, _Candidate] = {}
        self.note = note

    def offer(self, step: str, score: float, t: float, rgb: np.ndarray, detections: list[Detection],
              boxes: list[tuple[str, tuple[float, float, float, float]]] | None = None) -> None:
        current = self._best.get(step)
        if current is None or score > current.score:
            self._best[step] = _Candidate(score, t, rgb.copy(), list(detections), list(boxes or []))

    def steps(self) -> list[str]:
        return list(self._best)

    def render(self, step: str) -> bytes:
        c = self._best[step]
        caption = f"{step} at {c.t:.1f} s" + (f" - pill detector {self.note}" if self.note else "")
        return annotate(c.rgb, c.detections, c.boxes, caption)

    def save(self, sink: EvidenceSink) -> dict[str, dict]:
        """Render and store every kept frame; {step: {"t", "key", "score"}}."""
        saved = {}
        for step, c in sorted(self._best.items(), key=lambda kv: kv[1].t):
            key = sink(f"{step}.jpg", self.render(step))
            saved[step] = {"t": round(c.t, 2), "key": key, "score": round(c.score, 3)}
        return saved


def annotate(rgb: np.ndarray, detections: list[Detection],
             boxes: list[tuple[str, tuple[float, float, float, float]]], caption: str) -> bytes:
    img = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    h, w = img.shape[:2]
    scale = min(1.0, MAX_SIDE / max(h, w))
    if scale < 1.0:
        img = cv2.resize(img, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
    thick = max(1, round(max(img.shape[:2]) / 400))
    items = [(d.role, f"{d.label} {d.score:.2f}", d.box) for d in detections]
    items += [(name, name, box) for name, box in boxes]
    for role, text, box in items:
        r, g, b = _COLOURS.get(role, (255, 255, 255))
        x0, y0, x1, y1 = (round(v * scale) for v in box)
        cv2.rectangle(img, (x0, y0), (x1, y1), (b, g, r), thick)
        cv2.putText(img, text, (x0, max(12, y0 - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * thick, (b, g, r), thick,
                    cv2.LINE_AA)
    cv2.rectangle(img, (0, 0), (img.shape[1], 22 * thick), (0, 0, 0), -1)
    cv2.putText(img, caption, (6, 16 * thick), cv2.FONT_HERSHEY_SIMPLEX, 0.5 * thick, (255, 255, 255), thick,
                cv2.LINE_AA)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise RuntimeError("could not encode an evidence frame as JPEG")
    return buf.tobytes()
