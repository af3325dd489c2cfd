"""Self-report classification measured on spoken answers with known labels.

    python -m bench.self_report [--limit N] [--text-only]

Every answer in `ANSWERS` (96 answers to the medication prompt, 24 per class: taken,
missed, stopped, unclear; negations, partial doses, stopping and resuming, hedges) is
spoken by espeak-ng with one of `VOICES` at one of `SPEEDS` (chosen in turn, so the
set is the same on every run), transcribed by the real Whisper tiny.en through the audio
worker's own path (extract_audio + AudioAnalyser with the Silero VAD), and classified
by services/audio/self_report.py. Printed: accuracy, per-class recall, the confusion
matrix, how many answers were called `unclear`, and the same on the written text
(the classifier alone, without speech recognition). Synthetic voices are not patients:
the figures show how the rules and the transcript behave on clear speech, not in clinic.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from services.audio.self_report import CLASSES, classify_text, self_report

# (label, answer)
ANSWERS: tuple[tuple[str, str], ...] = (
    ("taken", "Yes, I took my medication every day this week."),
    ("taken", "I didn't miss any doses."),
    ("taken", "I haven't missed a single dose."),
    ("taken", "I took all of my tablets as prescribed."),
    ("taken", "Yes I did, I take it every morning with breakfast."),
    ("taken", "I never forget my pills."),
    ("taken", "I have taken them every evening, no problems."),
    ("taken", "I took it this morning like always."),
    ("taken", "No, I did not skip any."),
    ("taken", "I've been taking my medicine regularly."),
    ("taken", "Every dose, I remembered them all."),
    ("taken", "I took my injection on time last week."),
    ("taken", "I didn't forget once, I set an alarm."),
    ("taken", "I have not missed anything, I take them at night."),
    ("taken", "My wife reminds me and I take it every day."),
    ("taken", "Yes, all of them, as prescribed."),
    ("taken", "I swallowed my tablet just before the call."),
    ("taken", "I never stopped taking them, I take them daily."),
    ("taken", "I took both tablets, morning and evening."),
    ("taken", "No missed doses this week, I took every one."),
    ("taken", "I'm taking them like the doctor said."),
    ("taken", "I did take it, yes."),
    ("taken", "Took it every day, nothing missed."),
    ("taken", "I haven't skipped any of my medication."),
    ("missed", "I missed two doses on the weekend."),
    ("missed", "I forgot to take it yesterday."),
    ("missed", "I didn't take my medication on Tuesday."),
    ("missed", "I skipped the evening dose a few times."),
    ("missed", "I took only half of my dose because it made me sleepy."),
    ("missed", "I ran out of tablets on Friday."),
    ("missed", "I haven't taken it for three days."),
    ("missed", "Mostly yes, but I forgot once."),
    ("missed", "I took them except on Sunday when I forgot."),
    ("missed", "I missed the morning one today."),
    ("missed", "I only took one of my two tablets."),
    ("missed", "I cut the dose in half myself."),
    ("missed", "No, I did not take it today."),
    ("missed", "I forgot my pills when I was away."),
    ("missed", "I've missed a few."),
    ("missed", "I was sick so I skipped it for two days."),
    ("missed", "I took a smaller dose than prescribed."),
    ("missed", "I stopped for a few days but I'm taking them again now."),
    ("missed", "I didn't have my tablets with me on Saturday."),
    ("missed", "Some days I forget."),
    ("missed", "I took half a tablet instead of one."),
    ("missed", "I have not been taking the evening dose every day."),
    ("missed", "I missed one dose but took the rest."),
    ("missed", "I skipped a day."),
    ("stopped", "I stopped taking my medication."),
    ("stopped", "I'm not taking them anymore."),
    ("stopped", "I quit my pills last month."),
    ("stopped", "I don't take it any more, I don't need it."),
    ("stopped", "I gave up on the tablets."),
    ("stopped", "I stopped them because of the side effects."),
    ("stopped", "I no longer take my medication."),
    ("stopped", "I came off the medication two weeks ago."),
    ("stopped", "I threw them away."),
    ("stopped", "I decided not to take it anymore."),
    ("stopped", "I've stopped my tablets."),
    ("stopped", "I stopped last week."),
    ("stopped", "I quit taking the injections."),
    ("stopped", "I'm not on the medication anymore because I stopped it."),
    ("stopped", "I have stopped taking them completely."),
    ("stopped", "I don't take my pills anymore."),
    ("stopped", "I stopped the medicine, it made me feel slow."),
    ("stopped", "I haven't been taking it anymore since my last visit."),
    ("stopped", "I gave up taking them."),
    ("stopped", "I'm no longer taking the tablets."),
    ("stopped", "I stopped my medication on my own."),
    ("stopped", "I quit the pills."),
    ("stopped", "I came off them last month."),
    ("stopped", "I stopped taking them a while ago."),
    ("unclear", "I'm not sure."),
    ("unclear", "I don't remember."),
    ("unclear", "Yes."),
    ("unclear", "No."),
    ("unclear", "I think so, maybe."),
    ("unclear", "I can't remember if I took it."),
    ("unclear", "It's been a hard week."),
    ("unclear", "I don't know, my mother gives them to me."),
    ("unclear", "Can you repeat the question?"),
    ("unclear", "The weather was nice today."),
    ("unclear", "I'm not sure whether I took the evening one."),
    ("unclear", "I slept a lot this week."),
    ("unclear", "Hmm, well, I guess."),
    ("unclear", "I have no idea."),
    ("unclear", "I'm feeling okay."),
    ("unclear", "My doctor changed something, I'm not certain what."),
    ("unclear", "I went to the shop on Monday."),
    ("unclear", "Sort of."),
    ("unclear", "Mm, yeah, I suppose."),
    ("unclear", "I don't really know."),
    ("unclear", "I could not remember."),
    ("unclear", "Ask my nurse."),
    ("unclear", "Okay."),
    ("unclear", "I was busy with my brother."),
)
VOICES = ("en-us", "en", "en+f3", "en+m3", "en-gb-scotland", "en-029", "en+f2", "en-us-nyc")
SPEEDS = (140, 165, 190)  # words per minute

REPO = Path(__file__).resolve().parents[1]
VAD_MODEL = REPO / "models" / "silero_vad.onnx"
WHISPER_MODEL = REPO / "models" / "whisper-tiny.en"


def voice_of(index: int) -> tuple[str, int]:
    return VOICES[index % len(VOICES)], SPEEDS[(index // len(VOICES)) % len(SPEEDS)]


def speak(text: str, voice: str, speed: int, path: Path) -> Path:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
                   check=True, capture_output=True)
    return path


def figures(labels: list[str], predicted: list[str]) -> dict:
    """Accuracy, per-class recall, confusion (truth -> predicted -> count), answers called unclear."""
    confusion = {t: {p: 0 for p in CLASSES} for t in CLASSES}
    for truth, guess in zip(labels, predicted):
        confusion[truth][guess] += 1
    recall = {c: round(confusion[c][c] / n, 3) if (n := sum(confusion[c].values())) else None for c in CLASSES}
    correct = sum(t == p for t, p in zip(labels, predicted))
    return {"answers": len(labels), "accuracy": round(correct / len(labels), 3) if labels else None,
            "correct": correct, "recall": recall, "confusion": confusion,
            "called_unclear": sum(p == "unclear" for p in predicted),
            "truly_unclear": sum(t == "unclear" for t in labels)}


def on_text(answers=ANSWERS) -> dict:
    return figures([label for label, _ in answers], [classify_text(text).classification for _, text in answers])


def on_speech(answers=ANSWERS, *, threads: int = 2, on_answer=None) -> dict:
    """Each answer spoken, transcribed by the real Whisper tiny.en in the worker's path, classified."""
    from services.audio.analysis import AudioAnalyser
    from services.audio.handlers import make_analyse
    from services.audio.transcript import WhisperTranscriber

    analyse = make_analyse(AudioAnalyser(VAD_MODEL, transcriber=WhisperTranscriber(WHISPER_MODEL, threads=threads)),
                           16000)
    labels, predicted, rows = [], [], []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="self-report-") as work:
        for index, (label, text) in enumerate(answers):
            voice, speed = voice_of(index)
            wav = speak(text, voice, speed, Path(work) / f"{index:03d}.wav")
            report = analyse(wav, lambda *_: None)["self_report"]
            guess = report["classification"] or "unclear"  # no words at all: nothing was said clearly
            labels.append(label)
            predicted.append(guess)
            row = {"label": label, "predicted": guess, "voice": voice, "wpm": speed, "text": text,
                   "heard": report["answer"], "words": report["words"]}
            rows.append(row)
            if on_answer:
                on_answer(row)
    out = figures(labels, predicted)
    out["seconds"] = round(time.monotonic() - started, 1)
    out["errors"] = [r for r in rows if r["label"] != r["predicted"]]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="only the first N answers of each class")
    parser.add_argument("--text-only", action="store_true", help="the classifier on the written answers only")
    args = parser.parse_args()
    answers = ANSWERS
    if args.limit:
        answers = tuple(a for c in CLASSES for a in [x for x in ANSWERS if x[0] == c][: args.limit])
    report = {"method": self_report(None, None, 0.0)["method"], "text": on_text(answers)}
    if not args.text_only:
        report["speech"] = on_speech(answers)
        report["speech"]["voices"], report["speech"]["wpm"] = list(VOICES), list(SPEEDS)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
