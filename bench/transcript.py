"""The transcript in the patient's language: word error rate and speed of Whisper tiny.en and
Whisper base on speech synthesised from known text, in English, Spanish and Malay.

    python -m bench.transcript [--threads 2]

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
from services.audio.transcript import MULTILINGUAL_MODEL_SETTING, WhisperTranscriber

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--threads", type=int, default=2, help="Whisper CPU threads (AUDIO_MODEL_THREADS)")
    parser.add_argument("--seed", type=int, default=21)
    args = parser.parse_args()
    vad = args.models / "silero_vad.onnx"
    tiny = WhisperTranscriber(args.models / "whisper-tiny.en", threads=args.threads)
    base = WhisperTranscriber(args.models / "whisper-base", threads=args.threads, setting=MULTILINGUAL_MODEL_SETTING)
    analysers = {"tiny.en": AudioAnalyser(vad, transcriber=tiny),
                 "tiny.en + base": AudioAnalyser(vad, transcriber=tiny, multilingual=base),
                 "base": AudioAnalyser(vad, multilingual=base)}
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
