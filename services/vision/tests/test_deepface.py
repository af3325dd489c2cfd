"""deepface emotion backend: deepface's own loading code (pytorch engine) on weights
built here in deepface's layout ($DEEPFACE_HOME/.deepface/weights/...pth).

The weights are deepface's EmotionModel with a fixed random initialisation, not
its trained weights (those are downloaded from GitHub, which this project does
not do): the test checks the loading path, the preprocessing and the batching
against a plain forward pass of the same network."""

from __future__ import annotations

from pathlib import Path

import deepface  # noqa: F401 - `make setup` installs it (requirements-torch-nodeps.txt): missing is a failure
import numpy as np
import pytest
import torch

from services.vision.emotion import DEEPFACE_WEIGHTS, EMOTIONS, DeepFaceEmotion
from shared.domain.errors import ModelUnavailable


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    from deepface.models.demography.pytorch.Emotion import EmotionModel

    torch.manual_seed(0)
    home = tmp_path_factory.mktemp("deepface-home")
    weights = home / ".deepface" / "weights"
    weights.mkdir(parents=True)
    torch.save(EmotionModel().state_dict(), weights / DEEPFACE_WEIGHTS)
    return home


def test_loads_weights_from_deepface_home_and_classifies_a_batch(home):
    from deepface.models.demography.pytorch.Emotion import EmotionModel

    backend = DeepFaceEmotion(home, device="cpu")
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(5)]  # RGB face crops
    probs = backend.classify_batch(crops)
    assert probs.shape == (5, len(EMOTIONS))
    assert np.allclose(probs.sum(axis=1), 1.0)
    # the same network run by hand on 48x48 crops scaled 0-1 gives the same answer
    net = EmotionModel()
    net.load_state_dict(torch.load(home / ".deepface" / "weights" / DEEPFACE_WEIGHTS))
    net.eval()
    import cv2

    faces = [cv2.resize(cv2.cvtColor(c, cv2.COLOR_RGB2GRAY), (64, 64), interpolation=cv2.INTER_AREA) for c in crops]
    x = np.stack([cv2.resize(f.astype(np.float32) / 255.0, (48, 48)) for f in faces])[:, None]
    with torch.no_grad():
        expected = net(torch.from_numpy(x)).numpy()
    assert np.allclose(probs, expected, atol=1e-3)
    assert "deepface" in backend.method and str(home) in backend.describe()


def test_missing_weights_name_deepface_home(tmp_path):
    with pytest.raises(ModelUnavailable) as info:
        DeepFaceEmotion(tmp_path)
    assert info.value.setting == "DEEPFACE_HOME"
    assert DEEPFACE_WEIGHTS in str(info.value)


def test_wrong_weights_name_deepface_home(tmp_path):
    weights = tmp_path / ".deepface" / "weights"
    weights.mkdir(parents=True)
    torch.save({"conv_1.weight": torch.zeros(3)}, weights / DEEPFACE_WEIGHTS)
    with pytest.raises(ModelUnavailable) as info:
        DeepFaceEmotion(tmp_path)
    assert info.value.setting == "DEEPFACE_HOME"
