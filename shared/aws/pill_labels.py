"""A clinic's reviewed pill frames (labelled data) and its own pill detector's validation gate.

Reviewers' verdicts on evidence frames become labelled data: the review code writes each
reviewed frame here (`PillLabels.add`), with the pill boxes the reviewer drew, or none for
a frame the reviewer saw no pill in. `schizodot pills train --clinic C`
(services/vision/training/clinic.py) trains on them and validates on a held-out split.

Store layout (the media bucket; one prefix per clinic, so a clinic's data never mixes):

    pill-labels/<clinic_id>/frames/<frame_id>.jpg       the frame as the reviewer saw it (JPEG)
    pill-labels/<clinic_id>/frames/<frame_id>.json      its `LabelledFrame` (boxes in pixels)
    pill-labels/<clinic_id>/detector/record.json        the clinic's `DetectorRecord`
    pill-labels/<clinic_id>/detector/<version>.onnx     each trained detector (ONNX)

The gate (`Gate`, default precision >= 0.95 and recall >= 0.90 on >= 200 frames) is judged
on frames the detector never trained on: its held-out split plus every frame reviewed after
it was trained (`DetectorRecord.review`). A later review where the detector disagreed with
the reviewer counts against it; below the gate the record is `live: false` with the reason,
and the detector is not used for that clinic. Scoring is per frame: a frame with a pill is a
true positive when a detection overlaps a reviewer's box (IoU >= MATCH_IOU), else a false
negative; a detection matching no box is a false positive.

`PillLabels` runs on any `ObjectStore` (S3, or `shared.fakes.MemoryStorage`);
`InMemoryPillLabels` is the same interface in plain dicts for handler tests.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.aws.storage import ObjectStore

PREFIX = "pill-labels"
MATCH_IOU = 0.3
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the frame's pixels


def _checked(kind: str, value: str) -> str:
    if not _ID.match(value or "") or value in (".", ".."):
        raise ValueError(f"{kind} {value!r} is not a valid id (letters, digits, '_', '-', '.'; at most 128)")
    return value


def clinic_prefix(clinic_id: str) -> str:
    return f"{PREFIX}/{_checked('clinic id', clinic_id)}/"


def frame_key(clinic_id: str, frame_id: str, suffix: str) -> str:
    return f"{clinic_prefix(clinic_id)}frames/{_checked('frame id', frame_id)}.{suffix}"


def record_key(clinic_id: str) -> str:
    return f"{clinic_prefix(clinic_id)}detector/record.json"


def model_key(clinic_id: str, version: str) -> str:
    return f"{clinic_prefix(clinic_id)}detector/{_checked('detector version', version)}.onnx"


class LabelledFrame(BaseModel):
    """A frame a reviewer looked at, with the pill boxes they drew (none: no pill in it)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    frame_id: str = Field(pattern=_ID.pattern)
    clinic_id: str = Field(pattern=_ID.pattern)
    job_id: str | None = None
    step: str | None = None  # the evidence frame's step (e.g. pill_in_mouth)
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    boxes: tuple[Box, ...] = ()
    reviewer: str
    reviewed_at: str  # ISO 8601, UTC


# --- scoring and the gate -------------------------------------------------------------------------

@dataclass(frozen=True)
class Tally:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    frames: int = 0

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.frames + other.frames)

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else None

    def as_dict(self) -> dict:
        rounded = {name: round(v, 4) if v is not None else None
                   for name, v in (("precision", self.precision), ("recall", self.recall))}
        return {"frames": self.frames, "true_positives": self.tp, "false_positives": self.fp,
                "false_negatives": self.fn, **rounded}

    @classmethod
    def of(cls, block: dict | None) -> "Tally":
        block = block or {}
        return cls(block.get("true_positives", 0), block.get("false_positives", 0),
                   block.get("false_negatives", 0), block.get("frames", 0))


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_frame(truth: tuple[Box, ...], detected: list[Box]) -> Tally:
    """One frame: each reviewer's box found by a detection (IoU >= MATCH_IOU) is a true positive,
    each box not found a false negative, each detection matching no box a false positive."""
    unmatched = list(detected)
    tp = fn = 0
    for box in truth:
        best = max(unmatched, key=lambda d: iou(d, box), default=None)
        if best is not None and iou(best, box) >= MATCH_IOU:
            unmatched.remove(best)
            tp += 1
        else:
            fn += 1
    return Tally(tp=tp, fp=len(unmatched), fn=fn, frames=1)


class Gate(BaseModel):
    """What a clinic's detector must reach before it is used (`VISION_CLINIC_GATE_*` / CLI flags)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_precision: float = Field(0.95, ge=0, le=1)
    min_recall: float = Field(0.90, ge=0, le=1)
    min_frames: int = Field(200, ge=1)

    def judge(self, tally: Tally) -> tuple[bool, str]:
        """(live, why) for these figures, in words a clinician can read."""
        figures = (f"precision {_pct(tally.precision)}, recall {_pct(tally.recall)} on {tally.frames} "
                   f"frames it never trained on")
        shortfalls = []
        if tally.frames < self.min_frames:
            shortfalls.append(f"fewer than {self.min_frames} validation frames")
        if tally.precision is None or tally.precision < self.min_precision:
            shortfalls.append(f"precision below {self.min_precision:.2f}")
        if tally.recall is None or tally.recall < self.min_recall:
            shortfalls.append(f"recall below {self.min_recall:.2f}")
        if shortfalls:
            return False, f"switched off: {'; '.join(shortfalls)} ({figures})"
        return True, f"live: {figures} meet the gate"


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


class DetectorRecord(BaseModel):
    """A clinic's current detector: its version, its validation figures and whether it is live."""

    model_config = ConfigDict(extra="forbid")

    clinic_id: str
    version: str  # the ONNX file's sha256, 12 hex digits
    model_key: str
    trained_at: str
    trained_on: list[str]  # frame ids
    heldout: list[str]  # frame ids of the held-out split
    validation: dict  # Tally.as_dict() on the held-out split
    reviews: dict  # Tally.as_dict() of frames reviewed after training
    reviewed: list[str] = []  # frame ids counted in `reviews` (each once)
    gate: Gate = Gate()
    live: bool = False
    reason: str = ""

    def figures(self) -> Tally:
        return Tally.of(self.validation) + Tally.of(self.reviews)

    def rejudge(self) -> "DetectorRecord":
        self.live, self.reason = self.gate.judge(self.figures())
        return self

    def count_review(self, frame: LabelledFrame, detected: list[Box]) -> bool:
        """A frame reviewed after training, scored against what the detector found on it; False when
        the frame was trained on or already counted (nothing changes)."""
        if frame.frame_id in self.trained_on or frame.frame_id in self.heldout or frame.frame_id in self.reviewed:
            return False
        self.reviews = (Tally.of(self.reviews) + score_frame(frame.boxes, detected)).as_dict()
        self.reviewed.append(frame.frame_id)
        self.rejudge()
        return True

    def results_block(self) -> dict:
        """What the results say about the clinic's detector."""
        return {"version": self.version, "live": self.live, "reason": self.reason, "trained_at": self.trained_at,
                "validation": self.validation, "later_reviews": self.reviews, "combined": self.figures().as_dict(),
                "gate": self.gate.model_dump()}


# --- the store ------------------------------------------------------------------------------------

class PillLabelStore(Protocol):
    async def add(self, frame: LabelledFrame, jpeg: bytes) -> None: ...

    async def frames(self, clinic_id: str) -> list[LabelledFrame]: ...

    async def image(self, clinic_id: str, frame_id: str) -> bytes: ...

    async def record(self, clinic_id: str) -> DetectorRecord | None: ...

    async def save_record(self, record: DetectorRecord) -> None: ...

    async def save_model(self, clinic_id: str, version: str, onnx: bytes) -> str: ...

    async def model(self, clinic_id: str, version: str) -> bytes: ...


def _require_jpeg(jpeg: bytes) -> None:
    if not jpeg.startswith(b"\xff\xd8"):
        raise ValueError("a labelled frame must be a JPEG image")


class PillLabels:
    """`PillLabelStore` on an `ObjectStore` (S3 in the services)."""

    def __init__(self, storage: ObjectStore) -> None:
        self._storage = storage

    async def add(self, frame: LabelledFrame, jpeg: bytes) -> None:
        _require_jpeg(jpeg)
        # the image first: a label is never visible without its frame
        await self._storage.put_bytes(frame_key(frame.clinic_id, frame.frame_id, "jpg"), jpeg, "image/jpeg")
        await self._storage.put_json(frame_key(frame.clinic_id, frame.frame_id, "json"), frame.model_dump(mode="json"))

    async def frames(self, clinic_id: str) -> list[LabelledFrame]:
        keys = sorted(k for k in await self._storage.list_keys(clinic_prefix(clinic_id) + "frames/")
                      if k.endswith(".json"))
        return [LabelledFrame.model_validate(await self._storage.get_json(k)) for k in keys]

    async def image(self, clinic_id: str, frame_id: str) -> bytes:
        return await self._read(frame_key(clinic_id, frame_id, "jpg"))

    async def record(self, clinic_id: str) -> DetectorRecord | None:
        key = record_key(clinic_id)
        if not await self._storage.exists(key):
            return None
        return DetectorRecord.model_validate(await self._storage.get_json(key))

    async def save_record(self, record: DetectorRecord) -> None:
        await self._storage.put_json(record_key(record.clinic_id), record.model_dump(mode="json"))

    async def save_model(self, clinic_id: str, version: str, onnx: bytes) -> str:
        key = model_key(clinic_id, version)
        await self._storage.put_bytes(key, onnx, "application/octet-stream")
        return key

    async def model(self, clinic_id: str, version: str) -> bytes:
        return await self._read(model_key(clinic_id, version))

    async def _read(self, key: str) -> bytes:
        with tempfile.TemporaryDirectory(prefix="pill-labels-") as work:
            path = Path(work) / "object"
            await self._storage.download(key, path)
            return path.read_bytes()


class InMemoryPillLabels:
    """`PillLabelStore` in dicts, for tests."""

    def __init__(self) -> None:
        self._frames: dict[str, dict[str, tuple[LabelledFrame, bytes]]] = {}
        self._records: dict[str, dict] = {}
        self._models: dict[tuple[str, str], bytes] = {}

    async def add(self, frame: LabelledFrame, jpeg: bytes) -> None:
        _require_jpeg(jpeg)
        clinic_prefix(frame.clinic_id)
        self._frames.setdefault(frame.clinic_id, {})[frame.frame_id] = (frame, bytes(jpeg))

    async def frames(self, clinic_id: str) -> list[LabelledFrame]:
        clinic_prefix(clinic_id)
        return [f for _, (f, _) in sorted(self._frames.get(clinic_id, {}).items())]

    async def image(self, clinic_id: str, frame_id: str) -> bytes:
        return self._frames[clinic_id][frame_id][1]

    async def record(self, clinic_id: str) -> DetectorRecord | None:
        stored = self._records.get(clinic_id)
        return DetectorRecord.model_validate(stored) if stored else None

    async def save_record(self, record: DetectorRecord) -> None:
        self._records[record.clinic_id] = record.model_dump(mode="json")

    async def save_model(self, clinic_id: str, version: str, onnx: bytes) -> str:
        self._models[(clinic_id, version)] = bytes(onnx)
        return model_key(clinic_id, version)

    async def model(self, clinic_id: str, version: str) -> bytes:
        return self._models[(clinic_id, version)]
