"""Silero VAD (voice activity detection) run with onnxruntime alone, no torch.

This is a numpy port of what silero-vad 6.2.3 itself does with its ONNX model
(``silero_vad/utils_vad.py``: ``OnnxWrapper.__call__`` and
``get_speech_timestamps_from_probs``, MIT licence):

* the 16 kHz signal is cut into 512-sample windows (32 ms), the last one
  zero-padded;
* each window is prefixed with the last 64 samples of the previous window (the
  "context", zeros for the first window) and fed to the model together with the
  recurrent state (2 x 1 x 128) that the previous call returned;
* the per-window speech probabilities are turned into segments with
  silero's hysteresis: speech starts at ``prob >= threshold``, ends after
  ``min_silence_ms`` below ``threshold - 0.15``, segments shorter than
  ``min_speech_ms`` are dropped and each segment is padded by ``speech_pad_ms``.

silero's ``max_speech_duration_s`` splitting is not ported: its default
(infinity) disables it, and a check-in's speech never needs it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.domain.errors import ModelUnavailable

SAMPLE_RATE = 16_000
WINDOW_SAMPLES = 512
CONTEXT_SAMPLES = 64
MODEL_SETTING = "AUDIO_VAD_MODEL_PATH"

# SHA-256 of silero_vad/data/silero_vad.onnx in the silero-vad 6.2.3 wheel.
_KNOWN_MODELS = {
    "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3": "silero-vad 6.2.3 (onnx)",
}


@dataclass(frozen=True)
class Segment:
    """A stretch of speech, in seconds from the start of the audio."""

    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class SileroVad:
    """Loads the Silero VAD ONNX model once; each call keeps its own recurrent state.

    ``speech_probabilities`` holds no state between calls, so one instance can
    serve any number of sequential calls (onnxruntime sessions also allow
    concurrent ``run`` calls).
    """

    def __init__(self, model_path: Path) -> None:
        model_path = Path(model_path)
        if not model_path.is_file():
            raise ModelUnavailable(MODEL_SETTING, model_path, "the Silero VAD model file does not exist")
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - onnxruntime is a requirement
            raise ModelUnavailable(MODEL_SETTING, model_path, f"onnxruntime is not installed ({exc})") from exc

        data = model_path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        self.name = _KNOWN_MODELS.get(digest, f"silero-vad (onnx, unrecognised file sha256 {digest[:12]})")

        opts = onnxruntime.SessionOptions()
        # The model is tiny and called once per 32 ms window: thread pools only add overhead.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        try:
            self._session = onnxruntime.InferenceSession(data, sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            reason = f"cannot load the VAD model with onnxruntime ({exc})"
            raise ModelUnavailable(MODEL_SETTING, model_path, reason) from exc

        inputs = {i.name for i in self._session.get_inputs()}
        if not {"input", "state", "sr"} <= inputs:
            raise ModelUnavailable(
                MODEL_SETTING,
                model_path,
                f"not a Silero VAD v5/v6 model (its inputs are {sorted(inputs)}, expected input, state and sr)",
            )
        try:  # one real window proves the graph runs before the worker takes jobs
            self.speech_probabilities(np.zeros(WINDOW_SAMPLES, dtype=np.float32))
        except Exception as exc:
            raise ModelUnavailable(MODEL_SETTING, model_path, f"the VAD model does not run ({exc})") from exc

    def speech_probabilities(self, audio: np.ndarray) -> np.ndarray:
        """Speech probability (0..1) for each 512-sample window of 16 kHz float audio in [-1, 1]."""
        stream = self.stream()
        return np.concatenate([stream.feed(audio), stream.finish()])

    def stream(self) -> VadStream:
        """A fresh stream: feed audio chunk by chunk, get the same probabilities as one whole call."""
        return VadStream(self._session.run)


class VadStream:
    """Runs the VAD over audio that arrives in chunks, carrying the recurrent state, the
    64-sample context and any incomplete window across chunks, so long recordings never
    need to be in memory at once."""

    def __init__(self, run) -> None:
        self._run = run
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)
        self._rest = np.zeros(0, dtype=np.float32)
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)

    def feed(self, audio: np.ndarray) -> np.ndarray:
        """Probabilities of the complete windows now available; the remainder waits for more audio."""
        audio = np.concatenate([self._rest, np.asarray(audio, dtype=np.float32).reshape(-1)])
        n_windows = audio.size // WINDOW_SAMPLES
        self._rest = audio[n_windows * WINDOW_SAMPLES :]
        return self._windows(audio[: n_windows * WINDOW_SAMPLES], n_windows)

    def finish(self) -> np.ndarray:
        """The last, zero-padded window (if any audio is left)."""
        if not self._rest.size:
            return np.zeros(0, dtype=np.float32)
        last = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
        last[: self._rest.size] = self._rest
        self._rest = np.zeros(0, dtype=np.float32)
        return self._windows(last, 1)

    def _windows(self, audio: np.ndarray, n_windows: int) -> np.ndarray:
        padded = np.concatenate([self._context, audio])
        probs = np.empty(n_windows, dtype=np.float32)
        state, run, sr = self._state, self._run, self._sr
        for i in range(n_windows):
            # window i plus the 64 samples before it (zeros before the first window)
            frame = padded[i * WINDOW_SAMPLES : (i + 1) * WINDOW_SAMPLES + CONTEXT_SAMPLES][None, :]
            out, state = run(None, {"input": frame, "state": state, "sr": sr})
            probs[i] = out[0, 0]
        self._state = state
        if n_windows:
            self._context = padded[-CONTEXT_SAMPLES:].copy()
        return probs


def speech_segments(
    probs: np.ndarray,
    n_samples: int,
    *,
    threshold: float = 0.5,
    min_speech_ms: int = 250,
    min_silence_ms: int = 100,
    speech_pad_ms: int = 30,
) -> list[Segment]:
    """Silero's ``get_speech_timestamps_from_probs`` (defaults as in silero-vad 6.2.3), in seconds."""
    neg_threshold = max(threshold - 0.15, 0.01)
    min_speech = SAMPLE_RATE * min_speech_ms / 1000
    min_silence = SAMPLE_RATE * min_silence_ms / 1000
    pad = SAMPLE_RATE * speech_pad_ms / 1000

    spans: list[list[float]] = []
    triggered = False
    start = 0
    temp_end = 0
    for i, p in enumerate(probs):
        cur = WINDOW_SAMPLES * i
        if p >= threshold and temp_end:
            temp_end = 0
        if p >= threshold and not triggered:
            triggered = True
            start = cur
            continue
        if p < neg_threshold and triggered:
            if not temp_end:
                temp_end = cur
            if cur - temp_end < min_silence:
                continue
            if temp_end - start > min_speech:
                spans.append([start, temp_end])
            triggered = False
            temp_end = 0
    if triggered and n_samples - start > min_speech:
        spans.append([start, n_samples])

    for i, span in enumerate(spans):
        if i == 0:
            span[0] = int(max(0, span[0] - pad))
        if i != len(spans) - 1:
            gap = spans[i + 1][0] - span[1]
            if gap < 2 * pad:
                span[1] += int(gap // 2)
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - gap // 2))
            else:
                span[1] = int(min(n_samples, span[1] + pad))
                spans[i + 1][0] = int(max(0, spans[i + 1][0] - pad))
        else:
            span[1] = int(min(n_samples, span[1] + pad))
    return [Segment(s / SAMPLE_RATE, e / SAMPLE_RATE) for s, e in spans]
