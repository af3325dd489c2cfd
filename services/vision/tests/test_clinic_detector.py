"""A clinic's own pill detector behind its validation gate (shared/aws/pill_labels.py,
services/vision/training/clinic.py), on synthetic labelled frames: pills painted by
services/vision/training/synthetic.py. The figures here show the mechanism, not real accuracy.

The detector in the gate tests is a real one of the simplest kind (bright blobs found with
OpenCV): the gate judges what any detector found against what reviewers drew, so the
mechanism is tested without training a network in a unit test.
"""

from __future__ import annotations

import asyncio
import random

import cv2
import numpy as np
import pytest

from services.vision.training.clinic import count_review, evaluate, new_record, split
from services.vision.training.synthetic import draw_pill
from shared.aws.pill_labels import Gate, InMemoryPillLabels, LabelledFrame, PillLabels, Tally, frame_key, score_frame
from shared.fakes import MemoryStorage

CLINIC = "clinic-a"
SIZE = 160


def synthetic_frame(index: int, *, pill: bool, dim: bool = False, decoy: bool = False) -> tuple[np.ndarray, tuple]:
    """A dark frame with noise; a painted pill (bright, or `dim` enough for the blob detector to miss),
    and/or a bright round `decoy` that is not a pill."""
    rng = random.Random(index)
    canvas = np.random.default_rng(index).integers(10, 40, (SIZE, SIZE, 3)).astype(np.uint8)
    boxes: tuple = ()
    if pill:
        colours = ((90, 90, 85),) if dim else ((245, 245, 240),)
        box = draw_pill(canvas, (rng.uniform(40, 120), rng.uniform(40, 120)), rng.uniform(18, 26), rng, colours)
        boxes = (box,)
    if decoy:
        cv2.circle(canvas, (20, 20), 8, (250, 250, 250), -1)
    return canvas, boxes


def blob_detector(rgb: np.ndarray) -> list[tuple[float, float, float, float]]:
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    _, mask = cv2.threshold(grey, 120, 255, cv2.THRESH_BINARY)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        if w * h >= 20:
            out.append((float(x), float(y), float(x + w), float(y + h)))
    return out


async def add_frame(store, index: int, **kind) -> LabelledFrame:
    rgb, boxes = synthetic_frame(index, **kind)
    frame = LabelledFrame(frame_id=f"f{index:04d}", clinic_id=CLINIC, job_id=f"job-{index}", step="show_pill",
                          width=SIZE, height=SIZE, boxes=boxes, reviewer="dr-who",
                          reviewed_at="2026-12-06T19:00:00Z")
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    await store.add(frame, jpeg.tobytes())
    return frame


def detected_on(frame: LabelledFrame, **kind) -> list:
    rgb, _ = synthetic_frame(int(frame.frame_id[1:]), **kind)
    return blob_detector(rgb)


@pytest.fixture(params=["s3_layout", "in_memory"])
def store(request):
    return PillLabels(MemoryStorage()) if request.param == "s3_layout" else InMemoryPillLabels()


def test_the_gate_is_off_then_on_after_agreeing_reviews_then_off_after_disagreements(store):
    async def scenario():
        gate = Gate(min_precision=0.95, min_recall=0.90, min_frames=60)
        frames = [await add_frame(store, i, pill=i % 2 == 0) for i in range(80)]
        train, heldout = split(frames)
        assert heldout and train and not {f.frame_id for f in train} & {f.frame_id for f in heldout}
        validation = await evaluate(store, heldout, blob_detector)
        assert validation.precision == 1.0 and validation.recall == 1.0
        record = new_record(CLINIC, b"onnx bytes", "k", train, heldout, validation, gate)
        await store.save_record(record)
        # perfect on its held-out frames, but too few of them: off, and it says why
        assert len(heldout) < 60 and record.live is False
        assert record.reason.startswith("switched off: fewer than 60 validation frames")

        # later reviews where the detector agreed with the reviewer bring it over the gate
        index = 1000
        while not (await store.record(CLINIC)).live:
            frame = await add_frame(store, index, pill=index % 2 == 0)
            record = await count_review(store, frame, detected_on(frame, pill=index % 2 == 0))
            index += 1
        record = await store.record(CLINIC)
        assert record.live is True and record.figures().frames == 60
        assert record.reason.startswith("live: precision 1.000, recall 1.000 on 60 frames")
        block = record.results_block()
        assert block["version"] == record.version and block["validation"]["frames"] == len(heldout)

        # the same frame reviewed again counts once
        again = await count_review(store, frame, [])
        assert again.figures().frames == 60

        # reviews where it disagreed: a pill it missed, a bright decoy it took for a pill
        for i in range(2):
            missed = await add_frame(store, 5000 + i, pill=True, dim=True)
            assert detected_on(missed, pill=True, dim=True) == []
            record = await count_review(store, missed, detected_on(missed, pill=True, dim=True))
            decoy = await add_frame(store, 6000 + i, pill=False, decoy=True)
            record = await count_review(store, decoy, detected_on(decoy, pill=False, decoy=True))
            assert record.live is (i == 0)  # one of each keeps it at 0.968; two of each take it under
        assert "precision below 0.95" in record.reason and "recall below 0.95" not in record.reason
        assert record.reason.startswith("switched off:")
        stored = await store.record(CLINIC)
        assert stored.live is False and stored.results_block()["live"] is False
        assert stored.reviews["false_negatives"] == 2 and stored.reviews["false_positives"] == 2

    asyncio.run(scenario())


def test_the_default_gate_asks_for_200_frames_and_the_published_figures():
    gate = Gate()
    assert (gate.min_precision, gate.min_recall, gate.min_frames) == (0.95, 0.90, 200)
    assert gate.judge(Tally(tp=100, fp=0, fn=0, frames=199))[0] is False
    assert gate.judge(Tally(tp=100, fp=5, fn=11, frames=200))[0] is True  # 0.952 and 0.901
    assert gate.judge(Tally(tp=100, fp=6, fn=0, frames=400))[0] is False  # precision 0.943


def test_scoring_matches_boxes_by_overlap():
    assert score_frame(((10, 10, 20, 20),), [(11, 11, 21, 21)]) == Tally(tp=1, fp=0, fn=0, frames=1)
    assert score_frame(((10, 10, 20, 20),), [(50, 50, 60, 60)]) == Tally(tp=0, fp=1, fn=1, frames=1)
    assert score_frame((), []) == Tally(frames=1)


def test_the_store_layout_and_bad_input(store):
    async def scenario():
        frame = await add_frame(store, 1, pill=True)
        assert [f.frame_id for f in await store.frames(CLINIC)] == ["f0001"]
        assert (await store.image(CLINIC, "f0001")).startswith(b"\xff\xd8")
        assert await store.frames("clinic-b") == []  # another clinic sees nothing of it
        with pytest.raises(ValueError, match="JPEG"):
            await store.add(frame, b"not a jpeg")
        with pytest.raises(ValueError, match="not a valid id"):
            await store.frames("../clinic-a")
        assert await store.record(CLINIC) is None

    asyncio.run(scenario())
    assert frame_key(CLINIC, "f0001", "json") == "pill-labels/clinic-a/frames/f0001.json"


def test_the_vision_worker_uses_a_clinic_detector_only_while_it_is_live(tmp_path):
    from services.vision.clinic_detectors import ClinicDetectors

    async def scenario():
        store = InMemoryPillLabels()
        frames = [await add_frame(store, i, pill=i % 2 == 0) for i in range(40)]
        train, heldout = split(frames)
        record = new_record(CLINIC, b"model v1", "k", train, heldout, await evaluate(store, heldout, blob_detector),
                            Gate(min_frames=5))
        await store.save_model(CLINIC, record.version, b"model v1")
        loaded: list[bytes] = []
        detectors = ClinicDetectors(store, asyncio.get_running_loop(), tmp_path,
                                    load=lambda path: loaded.append(path.read_bytes()) or f"detector {path.name}")

        def look(clinic):
            return asyncio.to_thread(detectors.for_clinic, clinic)

        assert await look("clinic-without-one") == (None, None) and await look(None) == (None, None)
        await store.save_record(record)
        detector, block = await look(CLINIC)
        assert record.live and detector == f"detector {record.version}.onnx" and block["used"] is True
        assert block["version"] == record.version and block["validation"]["frames"] == len(heldout)
        await look(CLINIC)
        assert loaded == [b"model v1"]  # fetched and loaded once per version
        record.live, record.reason = False, "switched off: precision below 0.95 (...)"
        await store.save_record(record)
        detector, block = await look(CLINIC)
        assert detector is None and block["used"] is False and block["reason"].startswith("switched off")

    asyncio.run(scenario())
