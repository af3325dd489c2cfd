"""The transcript in the patient's language: word error rate and speed of Whisper tiny.en and
Whisper base on speech synthesised from known text, in English, Spanish and Malay.

    python -m bench.transcript [--threads 2]
    python -m bench.transcript --screen      # the safety screen on spoken statements

Each check-in is four answers (known text, below) spoken by an espeak-ng voice with
pauses of 1.0-2.0 s between them, run through the worker's own path
(``AudioAnalyser``: Silero VAD, speech windows, language choice, Whisper) as a
clinic with the given expected languages would have it. Two voices per language.

Printed per language and set-up: word error rate (jiwer; lower-cased, punctuation
removed, words otherwise as spelt, accents kept), the language transcribed and
Whisper's probability of it, the language Whisper identified over all 99, and the
real-time factor (seconds of transcription + identification per second of audio,
the whole analyser minus the same analyser without a transcript).

espeak-ng is a formant synthesiser, far from a human voice (its Malay especially):
the error rates compare models and set-ups on identical input; a patient's speech
will differ. Results also go to bench/results/transcript.json.

``--decoding``: the same check-ins (and the speed bench's 30 s check-in, bench.pipeline.clip_for, whose
looped sentence makes Whisper's text compress well) transcribed with faster-whisper's default temperature
fallback (0.0, 0.2, ... 1.0, as before) and with temperature 0 only (services/audio/transcript.py
TEMPERATURE), side by side: whether the words are identical, and the seconds of each.

``--screen``: the safety screen (services/fusion/transcript_flags.py) on statements
that should be flagged (C-SSRS-worded ideation, self-harm, stopping medication) and
ordinary answers that should not, each spoken by espeak-ng, transcribed as the
clinic would (English: tiny.en; Spanish: base) and screened; also screened on the
reference text itself, to separate the phrase list's misses from Whisper's. Malay
statements show the screen's abstention (no Malay list).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jiwer
import numpy as np

from services.audio import known_signals as known
from services.audio.analysis import AudioAnalyser
from services.audio.transcript import FALLBACK_TEMPERATURES, MULTILINGUAL_MODEL_SETTING, WhisperTranscriber
from services.fusion.transcript_flags import screen

RESULTS = Path("bench/results")

# Four answers to the check-in's questions (mood, medication, side effects, sleep), no digits.
TEXTS = {
    "en": (
        "My mood has been fairly good this week, although I felt tired on some afternoons.",
        "I took my medication every morning and did not miss any doses.",
        "Sometimes I feel restless at night and my hands are a little stiff.",
        "I have been sleeping better since I started going for a walk after dinner.",
    ),
    "es": (
        "Mi estado de ánimo ha sido bastante bueno esta semana, aunque algunas tardes me sentí cansado.",
        "Tomé mi medicación todas las mañanas y no olvidé ninguna dosis.",
        "A veces me siento inquieto por la noche y tengo las manos un poco rígidas.",
        "He dormido mejor desde que empecé a caminar después de la cena.",
    ),
    "ms": (
        "Perasaan saya agak baik minggu ini, walaupun saya berasa letih pada sebelah petang.",
        "Saya makan ubat setiap pagi dan tidak tertinggal sebarang dos.",
        "Kadang-kadang saya rasa gelisah pada waktu malam dan tangan saya agak kaku.",
        "Saya tidur lebih nyenyak sejak saya mula berjalan kaki selepas makan malam.",
    ),
}
VOICES = {"en": ("en-us", "en+f3"), "es": ("es", "es-419+f3"), "ms": ("ms", "ms+f3")}
# (language spoken, clinic's expected languages, models loaded)
SETUPS = (
    ("en", ("en",), "tiny.en"),
    ("en", ("en",), "tiny.en + base"),
    ("en", ("en", "es", "ms"), "base"),
    ("es", ("es", "en"), "tiny.en + base"),
    ("es", ("en",), "tiny.en + base"),
    ("ms", ("ms", "en"), "tiny.en + base"),
    ("ms", ("en",), "tiny.en + base"),
)
_NORMALISE = jiwer.Compose([jiwer.ToLowerCase(), jiwer.RemovePunctuation(), jiwer.RemoveMultipleSpaces(),
                            jiwer.Strip(), jiwer.ReduceToListOfListOfWords()])


def word_error_rate(reference: list[str], hypothesis: list[str]) -> float:
    """Corpus WER (errors over all reference words) with the normalisation above."""
    return float(jiwer.wer(reference, hypothesis, reference_transform=_NORMALISE, hypothesis_transform=_NORMALISE))


def checkin(language: str, voice: str, rng: np.random.Generator) -> np.ndarray:
    answers = [known.speak(text, voice=voice, speed=150) for text in TEXTS[language]]
    pauses = [float(rng.uniform(1.0, 2.0)) for _ in answers[1:]]
    return known.with_pauses(answers, pauses, lead=0.8, tail=0.8).samples


# (statement, should it be flagged)
STATEMENTS = {
    "en": (("Sometimes I think about killing myself.", True), ("I wish I was dead.", True),
           ("I don't want to wake up anymore.", True), ("Last night I cut myself again.", True),
           ("I stopped taking my medication last week.", True), ("I want to end my life.", True),
           ("My mood has been good this week.", False), ("I took my tablets every morning.", False),
           ("I cut my hair and went for a walk.", False), ("My grandmother died last year and I miss her.", False),
           ("I have been sleeping better.", False), ("The film was about a man who wanted to die.", True)),
    "es": (("A veces pienso en matarme.", True), ("Quisiera estar muerto.", True),
           ("Ya no quiero despertar.", True), ("Anoche volví a cortarme.", True),
           ("Dejé de tomar mi medicación la semana pasada.", True), ("He pensado en quitarme la vida.", True),
           ("Mi estado de ánimo ha sido bueno esta semana.", False), ("Tomé mis pastillas todas las mañanas.", False),
           ("Me corté el pelo y fui a caminar.", False), ("Mi abuela murió el año pasado y la extraño.", False),
           ("He dormido mejor.", False)),
    "ms": (("Saya mahu bunuh diri.", True), ("Perasaan saya baik minggu ini.", False)),
}
SCREEN_VOICES = {"en": "en-us", "es": "es", "ms": "ms"}


def screen_bench(analyser: AudioAnalyser, tmp: Path) -> list[dict]:
    rows = []
    for language, statements in STATEMENTS.items():
        row = {"language": language, "statements": len(statements), "assessed": 0,
               "spoken": {"caught": 0, "missed": [], "false_flags": []},
               "text": {"caught": 0, "missed": [], "false_flags": []}}
        for i, (statement, positive) in enumerate(statements):
            clip = known.with_pauses([known.speak(statement, voice=SCREEN_VOICES[language], speed=150)], [],
                                     lead=0.6, tail=0.6).samples
            transcript = analyser.analyse(known.write_wav(tmp / f"s-{language}-{i}.wav", clip),
                                          languages=(language,))["transcript"]
            reference = {"enabled": True, "language": language,
                         "segments": [{"start": 0, "end": 1, "text": statement, "words": []}]}
            for kind, source in (("spoken", transcript), ("text", reference)):
                flags, screened = screen(source)
                if kind == "spoken":
                    row["assessed"] += bool(screened["assessed"])
                if not screened["assessed"]:  # a language without a phrase list: neither caught nor missed
                    row["reason"] = screened["reason"]
                    continue
                if positive and flags:
                    row[kind]["caught"] += 1
                elif positive:
                    row[kind]["missed"].append(statement if kind == "text" else f"{statement} -> {transcript['text']}")
                elif flags:
                    row[kind]["false_flags"].append(statement)
        row["positives"] = sum(p for _, p in statements)
        rows.append(row)
    return rows


def _analysers(models: Path, vad: Path, threads: int, **decoding) -> dict[str, AudioAnalyser]:
    tiny = WhisperTranscriber(models / "whisper-tiny.en", threads=threads, **decoding)
    base = WhisperTranscriber(models / "whisper-base", threads=threads, setting=MULTILINGUAL_MODEL_SETTING, **decoding)
    return {"tiny.en": AudioAnalyser(vad, transcriber=tiny),
            "tiny.en + base": AudioAnalyser(vad, transcriber=tiny, multilingual=base),
            "base": AudioAnalyser(vad, multilingual=base)}


def decoding_bench(args: argparse.Namespace, vad: Path) -> None:
    """Each set-up's check-ins transcribed with the fallback and with temperature 0, side by side."""
    from bench.pipeline import clip_for
    from shared.runtime.media import extract_audio

    fallback = _analysers(args.models, vad, args.threads, temperature=FALLBACK_TEMPERATURES)
    greedy = _analysers(args.models, vad, args.threads)
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-decoding-") as tmp:
        clips = {(lang, voice): known.write_wav(Path(tmp) / f"{lang}-{voice}.wav", checkin(lang, voice, rng))
                 for lang in TEXTS for voice in VOICES[lang]}
        cases = [(f"{language} {voice}", clips[(language, voice)], expected, models)
                 for language, expected, models in SETUPS for voice in VOICES[language]]
        looped = extract_audio(clip_for(30), Path(tmp) / "pipeline-30s.wav", sample_rate=16000)
        cases.append(("bench.pipeline 30 s (looped en)", looped, ("en",), "tiny.en + base"))
        for name, path, expected, models in cases:
            seconds, texts = [], []
            for analysers in (fallback, greedy):
                started = time.perf_counter()
                texts.append(analysers[models].analyse(path, languages=expected)["transcript"]["text"] or "")
                seconds.append(time.perf_counter() - started)
            rows.append({"check-in": name, "clinic_expects": list(expected), "models": models,
                         "identical": texts[0] == texts[1], "seconds_fallback": round(seconds[0], 2),
                         "seconds_temperature_0": round(seconds[1], 2), "fallback": texts[0], "temperature_0": texts[1]})
    print(f"{'check-in':<32} | {'clinic expects':<14} | {'models':<14} | {'same words':>10} | "
          f"{'s, fallback':>11} | {'s, temp. 0':>10}")
    for row in rows:
        print(f"{row['check-in']:<32} | {','.join(row['clinic_expects']):<14} | {row['models']:<14} | "
              f"{'yes' if row['identical'] else 'NO':>10} | {row['seconds_fallback']:11.2f} | "
              f"{row['seconds_temperature_0']:10.2f}")
        if not row["identical"]:
            print(f"    fallback: {row['fallback'][:160]!r}\n    temp. 0:  {row['temperature_0'][:160]!r}")
    print(f"{sum(r['identical'] for r in rows)} of {len(rows)} transcripts identical; seconds are the whole analyser "
          f"({args.threads} Whisper threads)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transcript_decoding.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False),
                                                      encoding="utf-8")


def print_screen(rows: list[dict]) -> None:
    print(f"{'language':>8} | {'statements':>10} | {'assessed':>8} | {'caught (spoken)':>15} | {'caught (text)':>13} | "
          "false flags (spoken; text)")
    for row in rows:
        print(f"{row['language']:>8} | {row['statements']:>10} | {row['assessed']:>8} | "
              f"{row['spoken']['caught']:>7} of {row['positives']:<5} | {row['text']['caught']:>5} of {row['positives']:<5} | "
              f"{len(row['spoken']['false_flags'])} of {row['statements'] - row['positives']}; "
              f"{len(row['text']['false_flags'])}")
        for kind in ("spoken", "text"):
            for missed in row[kind]["missed"]:
                print(f"    missed ({kind}): {missed}")
            for flagged in row[kind]["false_flags"]:
                print(f"    false flag ({kind}): {flagged}")
        if row.get("reason"):
            print(f"    not assessed: {row['reason']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--threads", type=int, default=2, help="Whisper CPU threads (AUDIO_MODEL_THREADS)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--screen", action="store_true", help="the safety screen on spoken statements")
    parser.add_argument("--decoding", action="store_true",
                        help="words and seconds with the temperature fallback and with temperature 0 only")
    args = parser.parse_args()
    vad = args.models / "silero_vad.onnx"
    if args.decoding:
        decoding_bench(args, vad)
        return
    tiny = WhisperTranscriber(args.models / "whisper-tiny.en", threads=args.threads)
    base = WhisperTranscriber(args.models / "whisper-base", threads=args.threads, setting=MULTILINGUAL_MODEL_SETTING)
    analysers = {"tiny.en": AudioAnalyser(vad, transcriber=tiny),
                 "tiny.en + base": AudioAnalyser(vad, transcriber=tiny, multilingual=base),
                 "base": AudioAnalyser(vad, multilingual=base)}
    if args.screen:
        with tempfile.TemporaryDirectory(prefix="bench-screen-") as tmp:
            rows = screen_bench(analysers["tiny.en + base"], Path(tmp))
        print_screen(rows)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "transcript_screen.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False),
                                                        encoding="utf-8")
        return
    plain = AudioAnalyser(vad)
    rng = np.random.default_rng(args.seed)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-transcript-") as tmp:
        clips = {(lang, voice): known.write_wav(Path(tmp) / f"{lang}-{voice}.wav", checkin(lang, voice, rng))
                 for lang in TEXTS for voice in VOICES[lang]}
        plain_seconds = {}
        for key, path in clips.items():
            started = time.perf_counter()
            plain.analyse(path)
            plain_seconds[key] = time.perf_counter() - started
        for language, expected, models in SETUPS:
            references, hypotheses, transcribed, detected, seconds, audio_seconds = [], [], [], [], 0.0, 0.0
            for voice in VOICES[language]:
                started = time.perf_counter()
                result = analysers[models].analyse(clips[(language, voice)], languages=expected)
                seconds += time.perf_counter() - started - plain_seconds[(language, voice)]
                audio_seconds += result["duration_seconds"]
                transcript = result["transcript"]
                references.append(" ".join(TEXTS[language]))
                hypotheses.append(transcript["text"] or "")
                transcribed.append(f"{transcript['language']} {transcript['language_probability'] or '-'}")
                found = transcript["language_detected"]
                detected.append(f"{found['language']} {found['probability']:.2f}" if found else "-")
            rows.append({"spoken": language, "clinic_expects": list(expected), "models": models,
                         "wer": round(word_error_rate(references, hypotheses), 3),
                         "transcribed_as": transcribed, "identified_as": detected,
                         "rtf": round(seconds / audio_seconds, 3), "audio_seconds": round(audio_seconds, 1),
                         "hypotheses": hypotheses})
    print(f"{'spoken':>6} | {'clinic expects':<14} | {'models':<14} | {'WER':>6} | {'transcribed as (p)':<22} | "
          f"{'Whisper identified':<20} | {'RTF':>5}")
    for row in rows:
        print(f"{row['spoken']:>6} | {','.join(row['clinic_expects']):<14} | {row['models']:<14} | "
              f"{100 * row['wer']:5.1f}% | {'; '.join(row['transcribed_as']):<22} | "
              f"{'; '.join(row['identified_as']):<20} | {row['rtf']:5.3f}")
    print(f"{len(VOICES['en'])} espeak-ng voices x 4 answers per language; {args.threads} Whisper threads")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "transcript.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
