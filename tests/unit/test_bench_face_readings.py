"""The accuracy-at-coverage curve and the smoothing measurement of `bench.vision` count readings by the
analyser's own voting rule (services/vision/analysis.py): a floor, 0.8 for a covered face, none for a
head turned away."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from bench.vision import FLOORS, clip_reading, coverage_curve, frame_votes, smoothed
from services.vision.emotion import EMOTIONS, MIN_VOTE_CONFIDENCE_COVERED
from services.vision.quality import FaceQuality


@dataclass
class Face:
    quality: FaceQuality


def _face(covered: bool = False, unreadable: str | None = None) -> Face:
    return Face(FaceQuality(100.0, 120.0, 0.0, 0.0, 0.0, covered, [], unreadable))


def _probs(name: str, p: float) -> np.ndarray:
    row = np.full(len(EMOTIONS), (1 - p) / (len(EMOTIONS) - 1))
    row[EMOTIONS.index(name)] = p
    return row


def test_votes_follow_the_analysers_rule():
    faces = [_face(), _face(covered=True), _face(unreadable="turned_away"), _face()]
    probs = np.vstack([_probs("happy", 0.6), _probs("happy", 0.7), _probs("happy", 0.99), _probs("sad", 0.45)])
    assert frame_votes(faces, probs, 0.5).tolist() == [True, False, False, False]
    assert frame_votes(faces, probs, 0.4).tolist() == [True, False, False, True]
    assert not frame_votes(faces, probs, 0.3)[1]  # a covered face still needs MIN_VOTE_CONFIDENCE_COVERED
    assert frame_votes(faces, np.vstack([probs[:1], _probs("happy", MIN_VOTE_CONFIDENCE_COVERED), probs[2:]]), 0.5)[1]


def test_a_clip_reads_the_mean_of_its_voting_frames_or_nothing():
    faces = [_face(), _face(), _face()]
    probs = np.vstack([_probs("happy", 0.55), _probs("sad", 0.9), _probs("happy", 0.3)])
    assert clip_reading(faces, probs, 0.5) == "sad"  # (0.55 happy + 0.9 sad) / 2: sad leads
    assert clip_reading(faces, probs, 0.95) is None


def test_the_curve_counts_right_and_wrong_readings_per_floor():
    outcomes = [("happy", {f: "happy" for f in FLOORS}),
                ("sad", {f: ("angry" if f < 0.6 else None) for f in FLOORS}),
                ("neutral", {f: None for f in FLOORS})]
    curve = {row["floor"]: row for row in coverage_curve(outcomes)}
    assert curve[0.5] == {"floor": 0.5, "faces": 3, "readings": 2, "correct": 1, "wrong": 1, "coverage": 0.667,
                          "accuracy_of_readings": 0.5}
    assert curve[0.7]["readings"] == 1 and curve[0.7]["wrong"] == 0 and curve[0.7]["accuracy_of_readings"] == 1.0


def test_smoothing_averages_usable_neighbours_within_the_window():
    probs = np.vstack([_probs("happy", 0.9), _probs("happy", 0.4), _probs("angry", 0.99), _probs("happy", 0.8)])
    times = [0.0, 0.2, 0.4, 3.0]
    out = smoothed(probs, times, [True, True, False, True], window_s=1.0)
    assert out[1, EMOTIONS.index("happy")] == pytest.approx((0.9 + 0.4) / 2)  # the turned-away frame lends nothing
    assert np.allclose(out[2], probs[2]) and np.allclose(out[3], probs[3])  # 3.0 s is outside every window
    assert smoothed(probs, times, [True] * 4, 0.0) is probs
