"""The audio stage: validity of each vocal marker against known ground truth, and speed.

    python -m bench.audio --validity [--vowels 60] [--clips 40]   # error figures with counts
    python -m bench.audio --answers [--answer-checkins 12]        # per-answer markers (docs/per-question-markers.md)
    python -m bench.audio [--lengths 30 300] [--repeats 1]        # real-time factor

**Validity** (``--validity``): every marker is compared with a truth known by
construction (``services/audio/known_signals.py``), and the errors are printed
with their counts (the "Vocal markers" table of docs/clinical-measures.md comes from here):

- pitch mean, pitch variability, intensity, jitter and shimmer: synthetic vowels
  (random F0 80-300 Hz, pitch SD 0-3 semitones, jitter and shimmer), clean and
  with white noise at a harmonics-to-noise ratio of 30 and 20 dB, measured by
  ``voice.measure_voice``, the function the analyser runs on the speech (Silero VAD
  does not take a sustained synthetic vowel for speech, so the vowels skip it);
- HNR: vowels without jitter or shimmer plus white noise at a known ratio (5-30 dB);
- speaking fraction, pauses and speech rate: espeak-ng check-ins (3-5 sentences of
  hand-counted syllables, five voices, 130-200 words per minute, pauses of
  0.3-2.0 s), clean, with noise 20 dB below the speech, and through a telephone
  line, run through the worker's own ``AudioAnalyser``; words per minute through
  the analyser with the Whisper transcript (clean only);
- the recording checks: whispered speech, two voices, clipping, under 1.5 s of
  speech, silence and noise: how often each gives the flag or abstention it should.

Synthetic voices are not patients: the figures show that each method measures
what it says on signals whose answer is known, not how it behaves on every
voice. **Speed** (default): RTF = processing seconds / seconds of audio of the
worker's own path (extract_audio + AudioAnalyser) on an espeak-ng check-in, with
and without the transcript, side by side in one run.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from services.audio import known_signals as known
from services.audio import markers as audio_markers
from services.audio.analysis import AudioAnalyser
from services.audio.main import make_analyse
from services.audio.markers import VALIDITY_FILE, validated_markers
from services.audio.transcript import WhisperTranscriber
from services.audio.voice import measure_voice

SENTENCES = (
    "Good morning. I took my medication today, with breakfast, like every day.",
    "I slept about seven hours last night, and I woke up once.",
    "The voices were quieter this week. I went for a walk on Sunday with my sister.",
    "I feel a bit tired in the afternoons, but my appetite is fine.",
)
VOICES = ("en", "en-us", "en+f3", "en+m3", "en+f2")
RESULTS = Path("bench/results")


# --- validity ----------------------------------------------------------------------------


def errors(pairs: list[tuple[float | None, float]]) -> dict:
    """Error figures of (measured, truth) pairs; None measurements count as not measured."""
    got = [(m, t) for m, t in pairs if m is not None]
    row: dict = {"n": len(pairs), "measured": len(got)}
    if not got:
        return row
    measured, truth = np.array([m for m, _ in got]), np.array([t for _, t in got])
    err = measured - truth
    row.update(mae=float(np.mean(np.abs(err))), bias=float(np.mean(err)), p95=float(np.quantile(np.abs(err), 0.95)),
               median=float(np.median(np.abs(err))), p90=float(np.quantile(np.abs(err), 0.9)),
               max=float(np.max(np.abs(err))), truth_min=float(truth.min()), truth_max=float(truth.max()))
    if len(got) > 2 and truth.std() > 0 and measured.std() > 0:
        row["r"] = float(np.corrcoef(measured, truth)[0, 1])
    if truth.min() > 0.2 * truth.max():  # a percentage of a truth near zero says nothing
        row["mape"] = float(np.mean(np.abs(err) / truth) * 100)
    return row


def vowel_validity(count: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    table: dict[str, dict] = {}
    for condition, hnr in (("clean", None), ("HNR 30 dB", 30.0), ("HNR 20 dB", 20.0)):
        pairs: dict[str, list] = {k: [] for k in ("pitch_mean", "pitch_variability", "intensity", "jitter", "shimmer")}
        for i in range(count):
            vowel = known.synthetic_vowel(
                f0=float(math.exp(rng.uniform(math.log(80), math.log(300)))), seconds=3.0,
                jitter=float(rng.uniform(0, 0.015)), shimmer=float(rng.uniform(0, 0.08)),
                pitch_sd_semitones=float(rng.uniform(0, 3)), hnr_db=hnr, peak=float(rng.uniform(0.05, 0.8)),
                seed=int(rng.integers(1 << 30)))
            voice = measure_voice(vowel.samples)
            pairs["pitch_mean"].append((voice.pitch_mean_hz, vowel.f0_mean_hz))
            pairs["pitch_variability"].append((voice.pitch_sd_semitones, vowel.pitch_sd_semitones))
            pairs["intensity"].append((voice.intensity_db, vowel.intensity_db))
            pairs["jitter"].append((voice.jitter_percent, vowel.jitter_percent))
            pairs["shimmer"].append((voice.shimmer_percent, vowel.shimmer_percent))
        for marker, found in pairs.items():
            table.setdefault(marker, {})[condition] = errors(found)
    hnr_pairs = []
    for i in range(count):
        truth = float(rng.uniform(5, 30))
        vowel = known.synthetic_vowel(f0=float(math.exp(rng.uniform(math.log(80), math.log(300)))), seconds=3.0,
                                      pitch_sd_semitones=float(rng.uniform(0, 2)), hnr_db=truth,
                                      seed=int(rng.integers(1 << 30)))
        hnr_pairs.append((measure_voice(vowel.samples).hnr_db, truth))
    table["hnr"] = {"noise 5-30 dB": errors(hnr_pairs)}
    return table


def _known_checkin(rng: np.random.Generator, voice: str | None = None) -> known.KnownSpeech:
    utterances, syllables, words = [], 0, 0
    voice = voice or VOICES[rng.integers(len(VOICES))]
    speed, pitch = int(rng.integers(130, 201)), int(rng.integers(35, 66))
    for _ in range(int(rng.integers(3, 6))):
        sentence = known.known_sentence(rng)
        utterances.append(known.speak(sentence.text, voice=voice, speed=speed, pitch=pitch))
        syllables += sentence.syllables
        words += sentence.words
    pauses = [float(rng.uniform(0.3, 2.0)) for _ in utterances[1:]]
    return known.with_pauses(utterances, pauses, lead=float(rng.uniform(0.3, 1.5)), tail=float(rng.uniform(0.3, 1.5)),
                             syllables=syllables, words=words)


def _value(result: dict, marker: str) -> float | None:
    return result["vocal_markers"][marker]["value"]


def speech_validity(analyser: AudioAnalyser, with_text: AudioAnalyser | None, count: int, seed: int,
                    tmp: Path) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    clips = [_known_checkin(rng) for _ in range(count)]
    table: dict[str, dict] = {}
    checks: dict[str, dict] = {}
    conditions = {"clean": lambda x: x, "noise 20 dB SNR": lambda x: known.add_noise(x, 20.0, rng),
                  "telephone": known.telephone}
    for condition, degrade in conditions.items():
        pairs: dict[str, list] = {k: [] for k in ("speaking_fraction", "pause_count", "pause_rate",
                                                  "mean_pause_duration", "speech_rate")}
        flagged_two, narrowband = 0, 0
        for i, clip in enumerate(clips):
            result = analyser.analyse(known.write_wav(tmp / f"clip-{i}.wav", degrade(clip.samples)))
            minutes = clip.span_seconds / 60
            pairs["speaking_fraction"].append((_value(result, "speaking_fraction"),
                                               100 * clip.speech_seconds / clip.seconds))
            pairs["pause_count"].append((_value(result, "pause_count"), len(clip.pauses)))
            pairs["pause_rate"].append((_value(result, "pause_rate"), len(clip.pauses) / minutes))
            pairs["mean_pause_duration"].append((_value(result, "mean_pause_duration"), float(np.mean(clip.pauses))))
            pairs["speech_rate"].append((_value(result, "speech_rate"), clip.syllables / minutes))
            flagged_two += result["audio_quality"]["multiple_speakers_suspected"]
            narrowband += bool(result["audio_quality"]["narrowband"])
        for marker, found in pairs.items():
            table.setdefault(marker, {})[condition] = errors(found)
        checks[f"one voice ({condition}): not flagged as two"] = {"n": len(clips), "hits": len(clips) - flagged_two}
        if condition == "telephone":
            checks["telephone line: flagged narrowband"] = {"n": len(clips), "hits": narrowband}
        else:
            checks[f"full band ({condition}): not flagged narrowband"] = {"n": len(clips), "hits": len(clips) - narrowband}
    if with_text is not None:
        pairs = []
        for i, clip in enumerate(clips):
            result = with_text.analyse(known.write_wav(tmp / f"clip-{i}.wav", clip.samples))
            assert result["vocal_markers"]["speech_rate"]["unit"] == "words per min"
            pairs.append((_value(result, "speech_rate"), clip.words / (clip.span_seconds / 60)))
        table["speech_rate (words, transcript)"] = {"clean": errors(pairs)}
    return table, checks


def condition_checks(analyser: AudioAnalyser, count: int, seed: int, tmp: Path) -> dict:
    """How often each bad recording gives the flag or the abstention it should."""
    rng = np.random.default_rng(seed)
    voiced = ("pitch_mean", "pitch_variability", "jitter", "shimmer", "hnr")
    checks = {}

    def run(name: str, samples: np.ndarray) -> dict:
        return analyser.analyse(known.write_wav(tmp / f"{name}.wav", samples))

    hits = 0
    for i in range(count):
        clip = _known_checkin(rng, voice="en+whisper")
        result = run("whisper", clip.samples)
        hits += all(not result["vocal_markers"][m]["assessed"] for m in voiced)
    checks["whispered: voice markers not assessed"] = {"n": count, "hits": hits}

    hits = 0
    for i in range(count):
        low, high = (_known_checkin(rng, voice=v) for v in ("en+m3", "en+f3"))
        turns = [low.samples, high.samples, low.samples[: low.samples.size // 2], high.samples[: high.samples.size // 2]]
        result = run("two", known.with_pauses(turns, [0.6, 0.6, 0.6]).samples)
        hits += result["audio_quality"]["multiple_speakers_suspected"]
    checks["two voices (male and female espeak turns): flagged"] = {"n": count, "hits": hits}

    hits = 0
    for i in range(count):
        clip = _known_checkin(rng)
        result = run("clip", known.clipped(clip.samples / np.abs(clip.samples).max(), float(rng.uniform(4, 12))))
        hits += ("clipped" in result["vocal_markers"]["intensity"]["quality_flags"]
                 and not result["vocal_markers"]["jitter"]["assessed"])
    checks["clipped (gain 4-12): flagged, jitter/shimmer/HNR withheld"] = {"n": count, "hits": hits}

    hits = 0
    words = ("Yes.", "Fine.", "No.", "Okay.", "Thanks.")
    for i in range(count):
        speech = known.speak(words[i % len(words)], voice=VOICES[i % len(VOICES)])
        result = run("short", known.with_pauses([speech], [], lead=1.0, tail=1.0).samples)
        hits += not result["vocal_markers"]["pitch_variability"]["assessed"] and not result["vocal_markers"]["speech_rate"]["assessed"]
    checks["one word (< 1.5 s of speech): rates and variability not assessed"] = {"n": count, "hits": hits}

    hits = 0
    for i in range(count):
        samples = (np.zeros(5 * known.RATE, np.float32) if i % 2 == 0
                   else known.add_noise(np.zeros(5 * known.RATE, np.float32), 0.0, rng, reference=10 ** (-3 - i % 3)))
        result = run("silence", samples)
        hits += (not result["speech_detected"] and result["vocal_markers"]["speaking_fraction"]["value"] == 0.0
                 and not result["vocal_markers"]["pitch_mean"]["assessed"])
    checks["silence or white noise: no speech, nothing measured but 0 % speaking"] = {"n": count, "hits": hits}
    return checks


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_validity(report: dict) -> None:
    print("| marker | condition | n measured / n | truth range | mean abs error | mean abs % error | bias "
          "| 95th pct abs error | r |")
    print("|---|---|---|---|---|---|---|---|---|")
    for marker, conditions in report["markers"].items():
        for condition, row in conditions.items():
            print(f"| {marker} | {condition} | {row['measured']}/{row['n']} | "
                  f"{_fmt(row.get('truth_min'))}-{_fmt(row.get('truth_max'))} | {_fmt(row.get('mae'), 3)} | "
                  f"{_fmt(row.get('mape'), 1)} | {_fmt(row.get('bias'), 3)} | {_fmt(row.get('p95'), 3)} | "
                  f"{_fmt(row.get('r'), 3)} |")
    print()
    print("| recording check | right / n |")
    print("|---|---|")
    for name, row in report["checks"].items():
        print(f"| {name} | {row['hits']}/{row['n']} |")


def validity(args: argparse.Namespace) -> None:
    # The bench measures every marker's method; which ones the stage may report is derived
    # from what it finds (markers.VALIDATED, read from the stored output), not assumed here.
    audio_markers.VALIDATED = frozenset(audio_markers.UNITS)
    vad = args.models / "silero_vad.onnx"
    analyser = AudioAnalyser(vad)
    with_text = None
    if not args.no_transcript:
        with_text = AudioAnalyser(vad, transcriber=WhisperTranscriber(args.models / "whisper-tiny.en",
                                                                      threads=args.threads))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-audio-validity-") as tmp:
        markers = vowel_validity(args.vowels, args.seed)
        speech, checks = speech_validity(analyser, with_text, args.clips, args.seed + 1, Path(tmp))
        checks.update(condition_checks(analyser, args.checks, args.seed + 2, Path(tmp)))
    report = {"markers": {**markers, **speech}, "checks": checks, "seconds": round(time.perf_counter() - started, 1),
              "seed": args.seed}
    print_validity(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audio-validity.json").write_text(json.dumps(report, indent=2))
    print(f"\n{report['seconds']} s; written to {RESULTS / 'audio-validity.json'}")
    if args.write:  # the output the audio stage's VALIDATED is read from (services/audio/markers.py)
        stored = {"written_by": "python -m bench.audio --validity --write", "seed": args.seed,
                  "counts": {"vowels": args.vowels, "clips": args.clips, "checks": args.checks},
                  "markers": report["markers"], "checks": report["checks"]}
        VALIDITY_FILE.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
        print(f"validated markers: {', '.join(sorted(validated_markers(stored)))}; written to {VALIDITY_FILE}")


# --- per-answer markers ------------------------------------------------------------------

# Spanish sentences from slots, words counted by splitting (no commas: espeak-ng pauses at them).
SPANISH = {
    "subject": ("yo", "mi hermana", "el médico", "mi madre", "los niños", "el vecino"),
    "verb": ("limpié", "visité", "miré", "encontré", "pinté", "recordé"),
    "object": ("el jardín", "la cocina", "el hospital", "la ventana", "un perro pequeño", "el río"),
    "time": ("hoy", "ayer", "esta mañana", "el domingo", "por la tarde", "después de cenar"),
}
ANSWER_VOICES = {"en": ("en", "en-us", "en+f3", "en+m3"), "es": ("es", "es-419", "es+f3")}
PROMPTS = ("mood", "medication", "side_effects", "sleep", "anything_else")


def _clause(rng: np.random.Generator, language: str) -> str:
    if language == "en":
        return known.known_sentence(rng).text
    return " ".join(SPANISH[slot][rng.integers(len(SPANISH[slot]))] for slot in ("subject", "verb", "object", "time"))


def _sentence(rng: np.random.Generator, language: str) -> str:
    """One utterance: a clause, or two joined by "and" / "y" (espeak-ng does not pause there), so that
    utterances run from 4 to 15 words."""
    clauses = [_clause(rng, language) for _ in range(int(rng.integers(1, 3)))]
    text = f" {'and' if language == 'en' else 'y'} ".join(clauses)
    return text[0].upper() + text[1:] + "."


def answer_checkin(rng: np.random.Generator, voice: str, language: str) -> tuple[np.ndarray, list[dict], dict]:
    """A check-in with the five prompts at known times: each answer starts a known latency after its
    prompt (0.5-4 s), is 1-4 utterances with known pauses (0.3-1.5 s), and is followed by 1-3 s of
    silence before the next prompt; then a dosing step and 2 s. Returns the samples, the timeline
    and each answer's truth."""
    speed, pitch = int(rng.integers(130, 191)), int(rng.integers(35, 66))
    parts: list[np.ndarray] = []
    at = 0  # samples so far
    timeline, truth = [], {}

    def add(samples: np.ndarray) -> None:
        nonlocal at
        parts.append(samples)
        at += samples.size

    def silence(seconds: float) -> None:
        add(np.zeros(int(round(seconds * known.RATE)), np.float32))

    for step in PROMPTS:
        shown = at
        timeline.append({"step_id": step, "kind": "prompt", "shown_at_ms": int(round(1000 * shown / known.RATE))})
        shown = timeline[-1]["shown_at_ms"] * known.RATE / 1000  # the timeline's own (ms) precision
        silence(float(rng.uniform(0.5, 4.0)))
        onset, texts, speech, pauses = at, [], 0, []
        count = int(rng.integers(1, 5))
        for k in range(count):
            text = _sentence(rng, language)
            utterance = known.speak(text, voice=voice, speed=speed, pitch=pitch)
            add(utterance)
            texts.append(text)
            speech += utterance.size
            if k < count - 1:
                pause = int(round(float(rng.uniform(0.3, 1.5)) * known.RATE))
                silence(pause / known.RATE)
                pauses.append(pause)
        offset = at
        silence(float(rng.uniform(1.0, 3.0)))
        truth[step] = {"shown_s": shown / known.RATE, "onset_s": onset / known.RATE, "offset_s": offset / known.RATE,
                       "speech_s": speech / known.RATE, "pauses": len(pauses), "texts": texts}
    timeline.append({"step_id": "show_pill", "kind": "dosing", "shown_at_ms": int(round(1000 * at / known.RATE))})
    silence(2.0)
    ends = [entry["shown_at_ms"] / 1000 for entry in timeline[1:]]
    for (step, row), end in zip(truth.items(), ends):
        row["end_s"] = end
    return np.concatenate(parts), timeline, truth


def answer_truth(row: dict) -> dict[str, float | None]:
    """Each per-answer marker's true value, from what was placed."""
    from services.audio.answers import mattr

    words = [w for text in row["texts"] for w in text.split()]
    span_minutes = (row["offset_s"] - row["onset_s"]) / 60
    return {
        "response_latency": row["onset_s"] - row["shown_s"],
        "speaking_time": row["speech_s"],
        "speaking_fraction": 100 * row["speech_s"] / (row["end_s"] - row["shown_s"]),
        "pause_count": float(row["pauses"]),
        "pause_rate": row["pauses"] / span_minutes,
        "speech_rate": len(words) / span_minutes,
        "word_count": float(len(words)),
        "mean_length_of_utterance": len(words) / len(row["texts"]),
        "mattr": mattr(words),
    }


def answers_validity(args: argparse.Namespace) -> None:
    """Response latency and the split into answers on synthesised check-ins with known timings."""
    from services.audio import answers as answer_markers
    from services.audio.timing import speech_timing
    from services.audio.vad import SileroVad, speech_segments
    from shared.domain.timeline import CheckinTimeline, windows

    # Measure every method; which ones the stage reports follows from what is found.
    answer_markers.VALIDATED = {name: frozenset({"*"}) for name in answer_markers.MARKERS}
    audio_markers.VALIDATED = frozenset(audio_markers.UNITS)
    vad_path = args.models / "silero_vad.onnx"
    analyser = AudioAnalyser(
        vad_path, transcriber=WhisperTranscriber(args.models / "whisper-tiny.en", threads=args.threads),
        multilingual=WhisperTranscriber(args.models / "whisper-base", threads=args.threads))
    vad = SileroVad(vad_path)
    rng = np.random.default_rng(args.seed)
    checkins = []
    for i in range(args.answer_checkins):
        language = ("en", "es")[i % 2]
        voices = ANSWER_VOICES[language]
        checkins.append((language, voices[(i // 2) % len(voices)], *answer_checkin(rng, voices[(i // 2) % len(voices)],
                                                                                    language)))
    conditions = {"clean": lambda x: x, "noise 20 dB SNR": lambda x: known.add_noise(x, 20.0, rng)}
    pairs: dict[str, dict[str, list]] = {name: {} for name in answer_markers.MARKERS}
    segmentation: dict[str, dict] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-answers-") as tmp:
        for condition, degrade in conditions.items():
            for i, (language, voice, samples, timeline_entries, truth) in enumerate(checkins):
                row_key = f"{condition}, {language}"
                samples = degrade(samples)
                wav = known.write_wav(Path(tmp) / f"answers-{i}.wav", samples)
                timeline = CheckinTimeline.of(timeline_entries)
                result = analyser.analyse(wav, transcribe=True, languages=(language,), timeline=timeline)
                seconds = samples.size / known.RATE
                timing = speech_timing(speech_segments(vad.speech_probabilities(samples), samples.size,
                                                       speech_pad_ms=0), seconds)
                items = {item["step_id"]: item for item in result["answers"]["items"]}
                split = segmentation.setdefault(row_key, {"n": 0, "right": 0})
                for window in windows(timeline, seconds).of_kind("prompt"):
                    row, item = truth[window.step_id], items[window.step_id]
                    inside = [s for s in timing.stretches if s.end > window.start_s and s.start < window.end_s]
                    split["n"] += 1
                    split["right"] += bool(inside) and (
                        abs(max(inside[0].start, window.start_s) - row["onset_s"]) <= answer_markers.SEGMENT_TOLERANCE_S
                        and abs(min(inside[-1].end, window.end_s) - row["offset_s"]) <= answer_markers.SEGMENT_TOLERANCE_S)
                    for name, true in answer_truth(row).items():
                        if true is not None:
                            pairs[name].setdefault(row_key, []).append((item["markers"][name]["value"], true))
                print(f"  {condition}: check-in {i + 1}/{len(checkins)} ({language}, {voice}) done", flush=True)
    table = {name: {key: errors(found) for key, found in rows.items()} for name, rows in pairs.items()}
    report = {"markers": table, "segmentation": segmentation,
              "seconds": round(time.perf_counter() - started, 1), "seed": args.seed,
              "checkins": [{"language": c[0], "voice": c[1]} for c in checkins]}
    print_answers(report)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audio-answers.json").write_text(json.dumps(report, indent=2))
    print(f"\n{report['seconds']} s; written to {RESULTS / 'audio-answers.json'}")
    if args.write:  # the output the audio stage's answers.VALIDATED is read from
        stored = {"written_by": "python -m bench.audio --answers --write", "seed": args.seed,
                  "counts": {"checkins": args.answer_checkins, "answers_per_checkin": len(PROMPTS),
                             "voices": sorted({c[1] for c in checkins})},
                  "markers": table, "segmentation": segmentation}
        answer_markers.VALIDITY_FILE.write_text(json.dumps(stored, indent=2, sort_keys=True) + "\n")
        passed = answer_markers.validated_answer_markers(stored)
        print("validated per-answer markers: " + (", ".join(f"{name} ({' '.join(sorted(languages))})"
                                                           for name, languages in sorted(passed.items())) or "none")
              + f"; written to {answer_markers.VALIDITY_FILE}")


def print_answers(report: dict) -> None:
    print("\n| segmentation: answers whose detected speech starts and ends within 0.3 s of where it was placed "
          "| right / n |")
    print("|---|---|")
    for key, row in report["segmentation"].items():
        print(f"| {key} | {row['right']}/{row['n']} ({100 * row['right'] / max(row['n'], 1):.0f} %) |")
    print("\n| per-answer marker | condition, language | n measured / n | truth range | median abs error "
          "| p90 abs error | max abs error | bias | r |")
    print("|---|---|---|---|---|---|---|---|---|")
    for marker, rows in report["markers"].items():
        for key, row in rows.items():
            print(f"| {marker} | {key} | {row['measured']}/{row['n']} | "
                  f"{_fmt(row.get('truth_min'))}-{_fmt(row.get('truth_max'))} | {_fmt(row.get('median'), 3)} | "
                  f"{_fmt(row.get('p90'), 3)} | {_fmt(row.get('max'), 3)} | {_fmt(row.get('bias'), 3)} | "
                  f"{_fmt(row.get('r'), 3)} |")


# --- speed -------------------------------------------------------------------------------


def make_checkin(dest: Path, seconds: float) -> Path:
    """espeak-ng sentences separated by 0.8 s pauses, looped to `seconds`, as AAC in M4A."""
    with tempfile.TemporaryDirectory() as tmp:
        parts = []
        for i, text in enumerate(SENTENCES):
            wav = Path(tmp) / f"{i}.wav"
            subprocess.run(["espeak-ng", "-s", str(150 + 10 * i), "-w", str(wav), text], check=True, capture_output=True)
            parts.append(wav)
        inputs = [arg for wav in parts for arg in ("-i", str(wav))]
        chain = "".join(f"[{i}:a]apad=pad_dur=0.8[a{i}];" for i in range(len(parts)))
        joined = "".join(f"[a{i}]" for i in range(len(parts)))
        graph = f"{chain}{joined}concat=n={len(parts)}:v=0:a=1,aloop=loop=-1:size=2e6[out]"
        subprocess.run(
            ["ffmpeg", "-loglevel", "error", "-y", *inputs, "-filter_complex", graph, "-map", "[out]",
             "-t", str(seconds), "-ac", "1", "-ar", "44100", "-c:a", "aac", "-b:a", "96k", str(dest)],
            check=True, capture_output=True,
        )
    return dest


def speed(args: argparse.Namespace) -> None:
    vad = args.models / "silero_vad.onnx"
    plain = make_analyse(AudioAnalyser(vad), 16000)
    transcriber = WhisperTranscriber(args.models / "whisper-tiny.en", threads=args.threads)
    with_text = make_analyse(AudioAnalyser(vad, transcriber=transcriber), 16000)

    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-audio-") as tmp:
        for seconds in args.lengths:
            media = make_checkin(Path(tmp) / f"checkin-{seconds:g}s.m4a", seconds)
            plain(media, lambda *_: None)  # warm-up (first-call allocations, page cache)
            row = {"seconds": seconds}
            for name, analyse in (("without", plain), ("with", with_text)):
                times = []
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    result = analyse(media, lambda *_: None)
                    times.append(time.perf_counter() - started)
                row[name] = statistics.median(times)
                row[f"{name}_rtf"] = row[name] / result["duration_seconds"]
                if name == "with":
                    row["words"] = sum(len(s["words"]) for s in result["transcript"]["segments"])
            rows.append(row)

    cores = len(os.sched_getaffinity(0))
    print(f"audio stage real-time factor (processing s / audio s), {cores} CPU cores, median of {args.repeats}")
    print(f"{'audio':>8} | {'no transcript':>20} | {'with transcript':>20} | {'words':>6}")
    print(f"{'-' * 8}-+-{'-' * 20}-+-{'-' * 20}-+-{'-' * 6}")
    for r in rows:
        print(f"{r['seconds']:>7g}s | {r['without']:>7.2f} s  RTF {r['without_rtf']:.3f} | "
              f"{r['with']:>7.2f} s  RTF {r['with_rtf']:.3f} | {r['words']:>6}")
    print("targets: RTF <= 0.05 without transcript, <= 0.3 with")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "audio.json").write_text(json.dumps({"cores": cores, "rows": rows}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validity", action="store_true", help="measure each marker against known ground truth")
    parser.add_argument("--answers", action="store_true",
                        help="per-answer markers: response latency and the split into answers on synthesised "
                             "check-ins with known timings (English and Spanish)")
    parser.add_argument("--answer-checkins", type=int, default=12, help="synthesised check-ins of 5 answers (--answers)")
    parser.add_argument("--vowels", type=int, default=60, help="synthetic vowels per condition (--validity)")
    parser.add_argument("--clips", type=int, default=40, help="espeak-ng check-ins per condition (--validity)")
    parser.add_argument("--checks", type=int, default=20, help="recordings per bad-recording check (--validity)")
    parser.add_argument("--no-transcript", action="store_true", help="skip words per minute (--validity)")
    parser.add_argument("--write", action="store_true",
                        help="store the output as services/audio/validity.json (--answers: answers_validity.json), "
                             "which the stage's VALIDATED is read from")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--lengths", type=float, nargs="+", default=[30.0, 300.0], help="seconds of audio (speed)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per case, median reported (speed)")
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--threads", type=int, default=2, help="Whisper CPU threads (AUDIO_MODEL_THREADS)")
    args = parser.parse_args()
    if args.answers:
        answers_validity(args)
    elif args.validity:
        validity(args)
    else:
        speed(args)


if __name__ == "__main__":
    main()
