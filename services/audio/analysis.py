"""Audio analysis of a check-in: speech activity, vocal markers, speech emotion, optional transcript.

Pure analysis code (no queues, no storage), so the same ``AudioAnalyser`` runs in
the audio worker, a benchmark or a notebook. Models are loaded once in
``__init__`` and injected by the composition root (``main.build_analyser``);
``analyse`` is synchronous and CPU-bound.

Pipeline of ``analyse(wav)``:

1. The WAV (16 kHz mono PCM from ``extract_audio``) is read in 30 s chunks; other
   rates are resampled and channels averaged in memory.
2. Silero VAD (``vad.py``) runs chunk by chunk (state carried across chunks,
   progress per chunk) and finds speech segments. Segments closer than
   ``MIN_PAUSE_SECONDS`` are joined into one stretch of speech; the gaps between
   the stretches are the pauses.
3. openSMILE eGeMAPSv02 functionals are computed on the speech only (the speech
   stretches concatenated), so that leading/trailing silence and pauses do not
   dilute loudness or voicing rates. Pitch, jitter, shimmer and HNR are measured
   on voiced frames only by eGeMAPS itself. Audio quality (clipping, narrowband
   telephone audio, signal-to-noise ratio) is checked; clipped speech withholds
   jitter, shimmer and HNR, with the reason.
4. Emotion: by default from prosody by documented rules (``prosody_emotion``, a
   heuristic, see its docstring); with a trained model (``SpeechEmotionModel``,
   e.g. speechbrain) its probabilities over speech windows of <= 30 s, averaged.
5. Transcript (when a ``Transcriber`` is given): Whisper over the same speech windows.

Speed (bench/audio.py, 2 cores): RTF about 0.02 without transcript, 0.05-0.07 with.
"""

from __future__ import annotations

import math
import threading
from typing import Protocol
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import soundfile

from services.audio.vad import SAMPLE_RATE, WINDOW_SAMPLES, Segment, SileroVad, speech_segments
from shared.errors import InputError

# A silence between speech segments counts as a pause from this length on
# (Goldman-Eisler's 250 ms convention, which leaves out stop closures and
# other silences inside words). Shorter gaps count as speaking time.
MIN_PAUSE_SECONDS = 0.25
# Prosodic functionals over less speech than this are too noisy to read an emotion from.
MIN_SPEECH_SECONDS_FOR_EMOTION = 1.5

EMOTION_METHOD = "prosody_rules_v1"
EMOTIONS = ("neutral", "calm", "sad", "anxious", "happy", "angry")

ProgressCallback = Callable[[float, str], None]

# Audio is read and run through the VAD in chunks of this many samples (30 s, a
# whole number of 512-sample VAD windows), so a long recording is never held whole.
CHUNK_SAMPLES = 938 * 512
# Model emotion and transcript run on windows of speech of at most this length
# (Whisper's own window), cut at pauses.
MAX_WINDOW_SECONDS = 30.0
# A sample this close to full scale counts as clipped; more than CLIP_LIMIT of the
# speech clipped makes the voice-quality measures (jitter, shimmer, HNR) meaningless.
CLIP_LEVEL = 0.999
CLIP_LIMIT = 0.01
# Telephone audio (8 kHz sampling) has nothing above 4 kHz: below this share of
# the speech's energy above 4 kHz, the recording is narrowband.
NARROWBAND_ENERGY_SHARE = 1e-4


class SpeechEmotionModel(Protocol):
    """A trained speech-emotion classifier (e.g. ``speechbrain_emotion.SpeechBrainEmotion``)."""

    name: str

    def classify(self, audio: np.ndarray) -> dict[str, float]: ...


class Transcriber(Protocol):
    """Speech to text with word timings (e.g. ``transcript.WhisperTranscriber``)."""

    name: str

    def transcribe(self, audio: np.ndarray, offset: float = 0.0) -> list[dict]: ...


class AudioAnalyser:
    """Speech activity, vocal markers, speech emotion and (optionally) a transcript for one WAV file.

    ``emotion_model`` None means the prosody rules; ``transcriber`` None means no
    transcript. Load once, call ``analyse`` for each file. Calls are serialised by
    a lock, so sharing one instance between threads is safe (one analysis at a time).
    """

    def __init__(
        self,
        vad_model_path: Path,
        *,
        emotion_model: SpeechEmotionModel | None = None,
        transcriber: Transcriber | None = None,
    ) -> None:
        self._vad = SileroVad(Path(vad_model_path))  # raises ModelUnavailable("AUDIO_VAD_MODEL_PATH", ...)
        self._emotion_model = emotion_model
        self._transcriber = transcriber

        import opensmile

        self._smile = opensmile.Smile(
            feature_set=opensmile.FeatureSet.eGeMAPSv02,
            feature_level=opensmile.FeatureLevel.Functionals,
        )
        self.models = {
            "vad": self._vad.name,
            "features": f"opensmile {opensmile.__version__} eGeMAPSv02",
            "emotion": emotion_model.name if emotion_model else EMOTION_METHOD,
        }
        if transcriber:
            self.models["transcript"] = transcriber.name
        self._lock = threading.Lock()

    def analyse(self, wav_path: Path, on_progress: ProgressCallback | None = None) -> dict:
        """Analyse one WAV file (16 kHz mono is read in chunks; other formats are converted in memory).

        Returns a JSON-serialisable dict. Raises ``InputError`` when the file cannot
        be decoded as audio and ``FileNotFoundError`` when it does not exist (a
        caller's bug, not the input's).
        """
        progress = on_progress or (lambda fraction, message: None)
        with self._lock, open_audio(Path(wav_path)) as audio:
            progress(0.0, "reading audio")
            duration = audio.frames / SAMPLE_RATE
            # shares of the progress bar: VAD, features, model emotion, transcript
            spans = {"vad": 0.4, "features": 0.15, "emotion": 0.15 if self._emotion_model else 0.0,
                     "transcript": 0.4 if self._transcriber else 0.0}
            scale = 0.95 / sum(spans.values())

            stream = self._vad.stream()
            probs, energy = [], []
            chunks = max(1, -(-audio.frames // CHUNK_SAMPLES))
            for i, block in enumerate(audio.blocks(CHUNK_SAMPLES)):
                probs.append(stream.feed(block))
                energy.append(_window_power(block))
                progress(spans["vad"] * scale * (i + 1) / chunks, f"detecting speech ({i + 1}/{chunks})")
            probs.append(stream.finish())
            window_power = np.concatenate(energy) if energy else np.zeros(0)
            stretches = join_segments(speech_segments(np.concatenate(probs), audio.frames), MIN_PAUSE_SECONDS)
            timing = timing_markers(stretches)
            done = spans["vad"] * scale

            features: dict[str, float] = {}
            quality = {"sample_rate_hz": audio.source_rate, "narrowband": None, "clipped_fraction": None,
                       "snr_db": _snr_db(window_power, stretches), "warnings": [], "withheld_markers": {}}
            if stretches:
                progress(done, "measuring vocal features")
                speech = np.concatenate([audio.read(s.start, s.end) for s in stretches])
                row = self._smile.process_signal(speech, SAMPLE_RATE).iloc[0]
                features = {str(k): float(v) for k, v in row.items()}
                quality.update(_speech_quality(speech))
                del speech
            done += spans["features"] * scale

            markers = vocal_markers(timing, features)
            _apply_quality(quality, markers)
            windows = speech_windows(stretches, MAX_WINDOW_SECONDS)
            if self._emotion_model is None:
                emotion = prosody_emotion(markers, duration)
            else:
                emotion = self._model_emotion(audio, windows, markers, duration, progress, done,
                                              spans["emotion"] * scale)
            done += spans["emotion"] * scale
            transcript = self._transcribe(audio, windows, progress, done, spans["transcript"] * scale)

            result = {
                "audio_emotion": emotion,
                "vocal_markers": markers,
                "speech_detected": bool(stretches),
                "duration_seconds": round(duration, 3),
                "audio_quality": quality,
                "transcript": transcript,
                "models": dict(self.models),
            }
            progress(1.0, "audio analysed")
            return result

    def _model_emotion(self, audio, windows, markers, duration, progress, done, share) -> dict:
        """The model's probabilities per speech window, averaged weighted by speech time."""
        method = self._emotion_model.name
        reason = emotion_not_assessable(markers, duration)
        if reason:
            return _not_assessed(reason, method)
        totals: dict[str, float] = {}
        weight = 0.0
        for i, (start, end, speech_seconds) in enumerate(windows):
            for label, p in self._emotion_model.classify(audio.read(start, end)).items():
                totals[label] = totals.get(label, 0.0) + p * speech_seconds
            weight += speech_seconds
            progress(done + share * (i + 1) / len(windows), f"classifying speech emotion ({i + 1}/{len(windows)})")
        ranked = sorted(((label, total / weight) for label, total in totals.items()), key=lambda item: -item[1])
        return {
            "primary_emotion": ranked[0][0],
            "confidence": round(ranked[0][1], 3),
            "all_emotions": [{"emotion": label, "confidence": round(p, 3)} for label, p in ranked],
            "method": method,
            "assessed": True,
            "reason": None,
        }

    def _transcribe(self, audio, windows, progress, done, share) -> dict:
        if self._transcriber is None:
            return {"enabled": False, "text": None, "segments": [], "model": None,
                    "reason": "transcription is off (AUDIO_TRANSCRIPT_ENABLED)"}
        segments: list[dict] = []
        for i, (start, end, _speech) in enumerate(windows):
            segments += self._transcriber.transcribe(audio.read(start, end), offset=start)
            progress(done + share * (i + 1) / len(windows), f"transcribing ({i + 1}/{len(windows)})")
        reason = None
        if not windows:
            reason = "no speech detected"
        elif not segments:
            reason = "speech was detected but no words were recognised"
        return {"enabled": True, "text": " ".join(seg["text"] for seg in segments), "segments": segments,
                "model": self._transcriber.name, "reason": reason,
                "language": getattr(self._transcriber, "language", None)}


class AudioFile:
    """A WAV file read in pieces: 16 kHz mono is read from disk as needed; anything
    else (other rates, stereo) is converted whole in memory once, as before."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"audio file not found: {path}")
        try:
            self._file = soundfile.SoundFile(str(path))
        except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
            detail = getattr(exc, "error_string", None) or str(exc)  # libsndfile's reason, without the path
            raise InputError(f"the audio track could not be read: it is not a valid WAV file ({detail})") from exc
        self.source_rate = self._file.samplerate
        self._memory: np.ndarray | None = None
        if self._file.samplerate != SAMPLE_RATE or self._file.channels != 1:
            self._memory = read_audio(path)
            self._file.close()
        self.frames = self._memory.size if self._memory is not None else self._file.frames

    def blocks(self, size: int) -> Iterator[np.ndarray]:
        for start in range(0, self.frames, size):
            yield self._read_frames(start, min(self.frames, start + size))

    def read(self, start_seconds: float, end_seconds: float) -> np.ndarray:
        return self._read_frames(round(start_seconds * SAMPLE_RATE), round(end_seconds * SAMPLE_RATE))

    def _read_frames(self, start: int, stop: int) -> np.ndarray:
        start, stop = max(0, start), min(self.frames, stop)
        if self._memory is not None:
            return self._memory[start:stop]
        try:
            self._file.seek(start)
            data = self._file.read(max(0, stop - start), dtype="float32")
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            detail = getattr(exc, "error_string", None) or str(exc)
            raise InputError(f"the audio track could not be read: the WAV data is damaged ({detail})") from exc
        return np.nan_to_num(data, nan=0.0, posinf=1.0, neginf=-1.0)

    def close(self) -> None:
        if self._memory is None:
            self._file.close()

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audio(path: Path) -> AudioFile:
    return AudioFile(path)


def read_audio(path: Path) -> np.ndarray:
    """Mono float32 samples at 16 kHz; ``InputError`` when the file is not decodable audio."""
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, ValueError) as exc:
        detail = getattr(exc, "error_string", None) or str(exc)  # libsndfile's reason, without the path
        raise InputError(f"the audio track could not be read: it is not a valid WAV file ({detail})") from exc
    audio = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    audio = np.nan_to_num(audio, nan=0.0, posinf=1.0, neginf=-1.0)
    if rate != SAMPLE_RATE and audio.size:
        import audresample  # installed with opensmile

        audio = audresample.resample(audio, rate, SAMPLE_RATE)[0]
    return np.ascontiguousarray(audio, dtype=np.float32)


def speech_windows(stretches: list[Segment], max_seconds: float) -> list[tuple[float, float, float]]:
    """Consecutive stretches grouped into (start, end, speech seconds) windows of at most
    ``max_seconds``, cut at pauses; a single longer stretch is cut evenly."""
    windows: list[tuple[float, float, float]] = []
    for seg in stretches:
        if windows and seg.end - windows[-1][0] <= max_seconds:
            start, _end, speech = windows[-1]
            windows[-1] = (start, seg.end, speech + seg.duration)
            continue
        pieces = max(1, math.ceil(seg.duration / max_seconds))
        step = seg.duration / pieces
        windows += [(seg.start + k * step, seg.start + (k + 1) * step, step) for k in range(pieces)]
    return windows


def _window_power(block: np.ndarray) -> np.ndarray:
    """Mean power of each VAD window (512 samples) of a chunk."""
    n = block.size // WINDOW_SAMPLES
    if block.size % WINDOW_SAMPLES:
        block = np.concatenate([block, np.zeros(WINDOW_SAMPLES - block.size % WINDOW_SAMPLES, np.float32)])
        n += 1
    return np.square(block.reshape(n, WINDOW_SAMPLES), dtype=np.float64).mean(axis=1)


def _snr_db(window_power: np.ndarray, stretches: list[Segment]) -> float | None:
    """Speech power over background power (outside speech), in dB; None without both
    at least 1 s of speech and of background, or when the background is digital silence."""
    speech = np.zeros(window_power.size, dtype=bool)
    for seg in stretches:
        speech[int(seg.start * SAMPLE_RATE) // WINDOW_SAMPLES : math.ceil(seg.end * SAMPLE_RATE / WINDOW_SAMPLES)] = True
    one_second = SAMPLE_RATE / WINDOW_SAMPLES
    if speech.sum() < one_second or (~speech).sum() < one_second:
        return None
    noise = float(window_power[~speech].mean())
    if noise < 1e-10:  # below 16-bit quantisation: no background to compare with
        return None
    return round(10 * math.log10(max(float(window_power[speech].mean()), 1e-12) / noise), 1)


def _speech_quality(speech: np.ndarray) -> dict:
    """Clipping and bandwidth of the speech."""
    clipped = float(np.mean(np.abs(speech) >= CLIP_LEVEL)) if speech.size else 0.0
    spectrum = np.zeros(WINDOW_SAMPLES // 2 + 1)
    n = speech.size // WINDOW_SAMPLES
    if n:
        frames = speech[: n * WINDOW_SAMPLES].reshape(n, WINDOW_SAMPLES) * np.hanning(WINDOW_SAMPLES)
        spectrum = np.square(np.abs(np.fft.rfft(frames, axis=1))).sum(axis=0)
    total = float(spectrum.sum())
    above_4k = float(spectrum[int(4000 / (SAMPLE_RATE / WINDOW_SAMPLES)) + 2 :].sum())  # skip the resampler's roll-off
    return {
        "clipped_fraction": round(clipped, 4),
        "narrowband": bool(total > 0 and above_4k / total < NARROWBAND_ENERGY_SHARE) if total > 0 else None,
    }


def _apply_quality(quality: dict, markers: dict[str, dict]) -> None:
    """Warnings for people, and voice-quality markers withheld where the signal cannot support them."""
    if quality["clipped_fraction"] is not None and quality["clipped_fraction"] > CLIP_LIMIT:
        pct = 100 * quality["clipped_fraction"]
        reason = f"the recording is clipped ({pct:.1f} % of speech samples at full scale)"
        quality["warnings"].append(f"{reason}: jitter, shimmer and HNR are not measured; loudness is underestimated")
        for name in ("jitter", "shimmer", "hnr_db"):
            if markers[name]["value"] is not None:
                markers[name]["value"] = None
                quality["withheld_markers"][name] = reason
    if quality["narrowband"]:
        quality["warnings"].append(
            "narrowband audio (nothing above 4 kHz, e.g. a telephone line): loudness and HNR are lower "
            "than from a full-band microphone and should be compared only with other narrowband recordings"
        )
    if quality["snr_db"] is not None and quality["snr_db"] < 10:
        quality["warnings"].append(
            f"noisy recording (speech {quality['snr_db']:.0f} dB above the background): pitch, jitter, shimmer "
            "and HNR are less reliable"
        )


def join_segments(segments: list[Segment], min_gap: float) -> list[Segment]:
    """Join VAD segments separated by less than ``min_gap`` seconds into stretches of speech."""
    joined: list[Segment] = []
    for seg in segments:
        if joined and seg.start - joined[-1].end < min_gap:
            joined[-1] = Segment(joined[-1].start, seg.end)
        else:
            joined.append(seg)
    return joined


def timing_markers(stretches: list[Segment]) -> dict[str, float | int | None]:
    """Speaking time and pauses. Pauses are the gaps between stretches of speech.

    ``pause_ratio`` is pause time over speaking time *including* the pauses
    (first speech onset to last speech offset), so silence before the person
    starts or after they stop does not count; that lead-in is reported as
    ``speech_onset_seconds``.
    """
    speech = sum((s.duration for s in stretches), 0.0)
    pauses = [b.start - a.end for a, b in zip(stretches, stretches[1:])]
    span = stretches[-1].end - stretches[0].start if stretches else 0.0
    return {
        "speech_seconds": speech,
        "speech_segments": len(stretches),
        "pause_count": len(pauses),
        "pause_seconds": sum(pauses, 0.0),
        "mean_pause_seconds": sum(pauses) / len(pauses) if pauses else None,  # undefined without pauses
        "longest_pause_seconds": max(pauses) if pauses else None,
        "pause_ratio": sum(pauses) / span if span > 0 else None,
        "speech_onset_seconds": stretches[0].start if stretches else None,
    }


_F0_MEAN = "F0semitoneFrom27.5Hz_sma3nz_amean"
_F0_SDNORM = "F0semitoneFrom27.5Hz_sma3nz_stddevNorm"

# name -> unit; the order is the output order.
MARKER_UNITS: Mapping[str, str] = {
    "speech_seconds": "s",
    "speech_segments": "count (stretches of speech between pauses)",
    "pause_count": "count (silences >= 0.25 s between speech)",
    "pause_seconds": "s",
    "mean_pause_seconds": "s",
    "longest_pause_seconds": "s",
    "pause_ratio": "fraction of speaking time (first onset to last offset) spent in pauses",
    "speech_onset_seconds": "s from start of audio to first speech",
    "speech_rate": "voiced segments per second of speech (openSMILE VoicedSegmentsPerSec, syllable-rate proxy)",
    "loudness_peak_rate": "loudness peaks per second of speech (openSMILE loudnessPeaksPerSec)",
    "f0_mean_semitones": "semitones above 27.5 Hz (mean over voiced frames)",
    "f0_mean_hz": "Hz (f0_mean_semitones converted)",
    "f0_variability": "semitones (standard deviation of F0 over voiced frames)",
    "jitter": "ratio (mean local jitter, period-to-period F0 perturbation)",
    "shimmer": "dB (mean local shimmer)",
    "hnr_db": "dB (harmonics-to-noise ratio)",
    "loudness_mean": "openSMILE loudness (auditory-spectrum sum; relative, depends on recording level)",
    "loudness_variability": "coefficient of variation of loudness (std / mean)",
}

_DECIMALS = {"jitter": 5}


def vocal_markers(timing: Mapping[str, float | int | None], features: Mapping[str, float]) -> dict[str, dict]:
    """Markers with units; ``None`` where undefined (no speech, or no voiced frames)."""

    def feat(name: str) -> float | None:
        value = features.get(name)
        return value if value is not None and math.isfinite(value) else None

    f0_mean = feat(_F0_MEAN)
    voiced = f0_mean is not None and f0_mean > 0  # eGeMAPS writes 0 when no frame was voiced
    f0_sd_norm = feat(_F0_SDNORM)

    def voiced_only(value: float | None) -> float | None:
        return value if voiced else None

    values: dict[str, float | int | None] = dict(timing)
    values.update(
        {
            "speech_rate": feat("VoicedSegmentsPerSec"),
            "loudness_peak_rate": feat("loudnessPeaksPerSec"),
            "f0_mean_semitones": voiced_only(f0_mean),
            "f0_mean_hz": 27.5 * 2 ** (f0_mean / 12) if voiced else None,
            "f0_variability": f0_mean * f0_sd_norm if voiced and f0_sd_norm is not None else None,
            "jitter": voiced_only(feat("jitterLocal_sma3nz_amean")),
            "shimmer": voiced_only(feat("shimmerLocaldB_sma3nz_amean")),
            "hnr_db": voiced_only(feat("HNRdBACF_sma3nz_amean")),
            "loudness_mean": feat("loudness_sma3_amean"),
            "loudness_variability": feat("loudness_sma3_stddevNorm"),
        }
    )
    return {
        name: {"value": _round(values.get(name), _DECIMALS.get(name, 3)), "unit": unit}
        for name, unit in MARKER_UNITS.items()
    }


# --- emotion from prosody -------------------------------------------------------------

# Each cue is standardised as z = (value - centre) / scale and clipped to +-2.5.
# Centres are typical values for conversational adult speech: F0 standard
# deviation 2-4 semitones, pauses ~15 % of speaking time; loudness, loudness CV
# and voiced-segment rate are openSMILE eGeMAPS values for ordinary speech at a
# normal recording level. They are reasonable defaults, NOT norms fitted to
# patients or to this product's recordings.
CUES: Mapping[str, tuple[str, float, float]] = {
    # cue: (marker, centre, scale)
    "loudness": ("loudness_mean", 0.8, 0.4),
    "loudness_var": ("loudness_variability", 0.70, 0.15),
    "pitch_var": ("f0_variability", 3.0, 1.0),
    "rate": ("speech_rate", 3.0, 0.7),
    "pauses": ("pause_ratio", 0.15, 0.10),
}
Z_CLIP = 2.5
# A short answer without a pause says nothing about pausing: the pause cue is
# used only when the speaking span (speech + pauses) is at least this long.
MIN_SPAN_SECONDS_FOR_PAUSE_CUE = 5.0

# Score of each label = weighted mean of the cue z-scores. Directions follow the
# cue profiles in Juslin & Laukka (2003), "Communication of emotions in vocal
# expression and music performance", Psychological Bulletin 129(5), 770-814:
#   angry   - loud, large loudness swings, fast, high pitch variability;
#   happy   - high pitch variability, fast, moderately loud;
#   anxious - fast with restricted pitch variability (fear);
#   sad     - quiet, slow, flat pitch and loudness, many pauses;
#   calm    - soft and slowish but fluent (few pauses), as "tenderness".
# Loudness level has a small weight because it depends on the microphone.
RULE_WEIGHTS: Mapping[str, Mapping[str, float]] = {
    "angry": {"loudness": 1.0, "loudness_var": 1.0, "pitch_var": 0.5, "rate": 0.75, "pauses": -0.25},
    "happy": {"loudness": 0.5, "loudness_var": 0.5, "pitch_var": 1.0, "rate": 0.75, "pauses": -0.25},
    "anxious": {"pitch_var": -0.75, "rate": 1.0, "pauses": -0.25},
    "sad": {"loudness": -0.75, "loudness_var": -0.5, "pitch_var": -1.0, "rate": -1.0, "pauses": 1.0},
    "calm": {"loudness": -0.5, "loudness_var": -0.25, "pitch_var": -0.25, "rate": -0.5, "pauses": -0.5},
}
# "neutral" scores NEUTRAL_PRIOR minus the mean |z|: it wins when every cue is typical.
NEUTRAL_PRIOR = 0.5
# Softmax temperature: with all cues typical, neutral gets ~0.35 and each other label ~0.13.
TEMPERATURE = 0.5


def prosody_cues(markers: Mapping[str, Mapping]) -> dict[str, float]:
    """Clipped z-scores of the cues that could be measured (missing cues are left out)."""
    span = (markers["speech_seconds"]["value"] or 0.0) + (markers["pause_seconds"]["value"] or 0.0)
    cues = {}
    for cue, (marker, centre, scale) in CUES.items():
        value = markers[marker]["value"]
        if cue == "pauses" and span < MIN_SPAN_SECONDS_FOR_PAUSE_CUE:
            continue
        if value is not None:
            cues[cue] = max(-Z_CLIP, min(Z_CLIP, (value - centre) / scale))
    return cues


def prosody_emotion(markers: Mapping[str, Mapping], duration_seconds: float) -> dict:
    """Emotion label from prosodic cues: a documented HEURISTIC, not a trained classifier.

    No speech-emotion model with trustworthy weights is available offline, so
    the label is read from five prosodic cues (loudness, loudness variability,
    F0 variability in semitones, voiced-segment rate, pause ratio) with the rule
    weights in ``RULE_WEIGHTS`` and a softmax (``TEMPERATURE``) over the rule
    scores. Prosody mostly carries arousal; valence (happy vs angry, calm vs
    sad) is weakly determined by it, and blunted prosody, medication or a quiet
    microphone look like "sad"/"calm". The confidences are the softmax of rule
    scores, not calibrated probabilities. Read the output as "the voice
    sounded ...", never as a diagnosis of mood.

    Not assessed (no label, ``assessed`` False, ``reason`` set) when no speech
    was detected or there is less than ``MIN_SPEECH_SECONDS_FOR_EMOTION`` of it.
    """
    reason = emotion_not_assessable(markers, duration_seconds)
    if reason:
        return _not_assessed(reason)
    cues = prosody_cues(markers)
    if not cues:
        return _not_assessed("no prosodic features could be measured from the speech")

    scores = {label: _rule_score(weights, cues) for label, weights in RULE_WEIGHTS.items()}
    scores["neutral"] = NEUTRAL_PRIOR - sum(abs(z) for z in cues.values()) / len(cues)
    top = max(scores.values())
    exp = {label: math.exp((score - top) / TEMPERATURE) for label, score in scores.items()}
    total = sum(exp.values())
    ranked = sorted(
        ((label, value / total) for label, value in exp.items()),
        key=lambda item: (-item[1], EMOTIONS.index(item[0])),
    )
    return {
        "primary_emotion": ranked[0][0],
        "confidence": round(ranked[0][1], 3),
        "all_emotions": [{"emotion": label, "confidence": round(p, 3)} for label, p in ranked],
        "method": EMOTION_METHOD,
        "assessed": True,
        "reason": None,
    }


def emotion_not_assessable(markers: Mapping[str, Mapping], duration_seconds: float) -> str | None:
    """Why no emotion can be read from this audio (no or too little speech), or None."""
    speech = markers["speech_seconds"]["value"] or 0.0
    if speech <= 0:
        return f"no speech detected in {duration_seconds:.1f} s of audio"
    if speech < MIN_SPEECH_SECONDS_FOR_EMOTION:
        return (
            f"only {speech:.1f} s of speech detected; at least {MIN_SPEECH_SECONDS_FOR_EMOTION:.1f} s "
            "is needed to estimate emotion"
        )
    return None


def _rule_score(weights: Mapping[str, float], cues: Mapping[str, float]) -> float:
    """Weighted mean of the measured cues' z-scores (0 when none of the rule's cues was measured)."""
    used = [(w, cues[c]) for c, w in weights.items() if c in cues]
    return sum(w * z for w, z in used) / sum(abs(w) for w, _ in used) if used else 0.0


def _not_assessed(reason: str, method: str = EMOTION_METHOD) -> dict:
    return {
        "primary_emotion": None,
        "confidence": None,
        "all_emotions": [],
        "method": method,
        "assessed": False,
        "reason": reason,
    }


def _round(value: float | int | None, decimals: int) -> float | int | None:
    if value is None or isinstance(value, int):
        return value
    value = float(value)
    return round(value, decimals) if math.isfinite(value) else None
