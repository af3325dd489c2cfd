"""How a face frame becomes the emotion networks' input: the crop turned upright by the eye landmarks
(emotion.FaceReading, aligned_face_crop).

The alignment tests run the real face landmarker on skimage's astronaut (a real smiling face),
rolled in the frame with OpenCV the way `bench.vision --accuracy` films its "tilted" condition.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from bench.vision import condition, geometry, still_clip
from services.vision.analysis import VisionAnalyser
from services.vision.emotion import FaceReading, aligned_face_crop, eye_roll_degrees, face_crop
from services.vision.tests.test_analysis import EMOTION_MODEL, FACE_EXPRESSION_MODEL, FACE_MODEL, HAND_MODEL


@pytest.fixture(scope="module")
def analyser() -> VisionAnalyser:
    with VisionAnalyser(FACE_MODEL, HAND_MODEL, EMOTION_MODEL, face_expression_model_path=FACE_EXPRESSION_MODEL,
                        sample_fps=4.0) as a:
        yield a


def _landmarks(analyser: VisionAnalyser, rgb: np.ndarray) -> np.ndarray:
    with analyser._landmarks.open_session() as session:
        faces, _ = session.detect(rgb, 0.0)
    assert faces, "the landmarker found no face"
    return max(faces, key=lambda f: f.area).landmarks


def _rolled(rgb: np.ndarray, degrees: float, analyser: VisionAnalyser) -> np.ndarray:
    geo = geometry(rgb, analyser)
    centre = ((geo.bbox[0] + geo.bbox[2]) / 2, (geo.bbox[1] + geo.bbox[3]) / 2)
    turn = cv2.getRotationMatrix2D(centre, degrees, 1.0)
    return cv2.warpAffine(rgb, turn, (rgb.shape[1], rgb.shape[0]), borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("degrees", [25.0, -25.0])
def test_a_rolled_face_is_turned_upright_before_the_networks(analyser, degrees):
    rolled = _rolled(skdata.astronaut(), degrees, analyser)
    landmarks = _landmarks(analyser, rolled)
    assert abs(abs(eye_roll_degrees(landmarks)) - 25.0) < 5.0  # the landmarker sees the roll
    upright = aligned_face_crop(rolled, landmarks)
    assert upright.shape == (112, 112, 3) and upright.dtype == np.uint8
    # the landmarker, run again on the crop, finds the eyes level there; on the plain box crop, still rolled
    assert abs(eye_roll_degrees(_landmarks(analyser, upright))) < 4.0
    box = tuple(float(v) for v in (*landmarks[:, :2].min(axis=0), *landmarks[:, :2].max(axis=0)))
    assert abs(abs(eye_roll_degrees(_landmarks(analyser, face_crop(rolled, box)))) - 25.0) < 5.0


def test_level_eyes_give_exactly_the_plain_crop(analyser):
    photo = skdata.astronaut()
    landmarks = _landmarks(analyser, photo).astype(np.float64)
    # the landmarks turned about their centre so the eyes are exactly level: no rotation is left to do
    centre = (landmarks[:, :2].min(axis=0) + landmarks[:, :2].max(axis=0)) / 2
    level = cv2.getRotationMatrix2D(tuple(centre), eye_roll_degrees(landmarks), 1.0)
    landmarks[:, :2] = landmarks[:, :2] @ level[:, :2].T + level[:, 2]
    assert abs(eye_roll_degrees(landmarks)) < 1e-6
    box = tuple(float(v) for v in (*landmarks[:, :2].min(axis=0), *landmarks[:, :2].max(axis=0)))
    assert np.array_equal(aligned_face_crop(photo, landmarks), face_crop(photo, box))


def test_a_face_outside_the_frame_is_refused():
    landmarks = np.array([[900.0, 900.0, 0.0]] * 478)
    landmarks[:, :2] += np.random.default_rng(0).uniform(0, 50, (478, 2))
    with pytest.raises(ValueError, match="outside the frame"):
        aligned_face_crop(np.zeros((480, 640, 3), np.uint8), landmarks)


def test_a_rolled_smiling_face_is_read_through_the_pipeline(analyser, tmp_path):
    rolled = _rolled(skdata.astronaut(), 25.0, analyser)
    result = analyser.analyse(still_clip(rolled, tmp_path / "rolled.mp4", seconds=2.0))
    fe = result["facial_emotion"]
    assert fe["assessed"] and fe["primary_emotion"] == "happy"
    assert fe["frames_with_reading"] == fe["frames_with_face"] > 0
    assert "upright" in fe["reading_method"] and "eyes" in fe["reading_method"]


def test_the_tilted_condition_rolls_the_face_each_way(analyser):
    photo = skdata.astronaut()
    geo = geometry(photo, analyser)
    rolls = [eye_roll_degrees(_landmarks(analyser, condition(photo, "tilted", geo, seed=s))) for s in (0, 1)]
    base = eye_roll_degrees(_landmarks(analyser, photo))
    assert sorted(round(r - base) for r in rolls) == pytest.approx([-20, 20], abs=4)


def test_the_plain_crop_is_kept_for_comparison(analyser):
    rolled = _rolled(skdata.astronaut(), 25.0, analyser)
    landmarks = _landmarks(analyser, rolled)
    box = tuple(float(v) for v in (*landmarks[:, :2].min(axis=0), *landmarks[:, :2].max(axis=0)))
    assert np.array_equal(FaceReading(align=False).crop(rolled, landmarks, box), face_crop(rolled, box))
    assert np.array_equal(FaceReading().crop(rolled, landmarks, box), aligned_face_crop(rolled, landmarks))
    assert "box" in FaceReading(align=False).describe() and "upright" in FaceReading().describe()
