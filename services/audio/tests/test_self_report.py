"""Self-report of the medication (services/audio/self_report.py): the rules on the labelled text set
(bench/self_report.py's 96 answers), the answer's window from the timeline, and a few spoken answers
through the worker's path with the real Silero VAD and Whisper tiny.en (espeak-ng speech made here)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from bench.self_report import ANSWERS, figures, voice_of
from services.audio.analysis import AudioAnalyser
from services.audio.handlers import make_analyse
from services.audio.self_report import CLASSES, classify_text, self_report
from services.audio.settings import AudioSettings
from services.audio.transcript import WhisperTranscriber
from shared.domain.options import CheckinOptions
from shared.domain.timeline import CheckinTimeline
from shared.runtime.modality import Checkin

REPO = Path(__file__).resolve().parents[3]
VAD_MODEL = REPO / "models" / "silero_vad.onnx"
WHISPER_MODEL = REPO / "models" / "whisper-tiny.en"
RATE = 16_000


def test_the_labelled_text_set_is_balanced_and_large_enough():
    assert len(ANSWERS) >= 80
    assert {label for label, _ in ANSWERS} == set(CLASSES)
    assert min(sum(label == c for label, _ in ANSWERS) for c in CLASSES) >= 20


def test_the_rules_classify_every_written_answer_of_the_set():
    result = figures([label for label, _ in ANSWERS], [classify_text(text).classification for _, text in ANSWERS])
    wrong = [(label, text, classify_text(text).classification) for label, text in ANSWERS
             if classify_text(text).classification != label]
    assert wrong == [] and result["accuracy"] == 1.0


@pytest.mark.parametrize(("text", "label", "words"), [
    ("I didn't miss any", "taken", ["didn't", "miss"]),
    ("I never stopped taking them", "taken", ["never", "stopped", "taking"]),
    ("I haven't taken it since Monday", "missed", ["haven't", "taken"]),
    ("I forgot to take it twice", "missed", ["forgot", "to", "take"]),
    ("I'm not taking them anymore", "stopped", ["not", "taking"]),
    ("I stopped, but I'm back on them now", "missed", ["stopped,"]),
    ("Yes.", "unclear", []),
])
def test_negations_stopping_and_resuming_rest_on_the_words_that_say_so(text, label, words):
    reading = classify_text(text)
    assert reading.classification == label and reading.words == words


def test_a_partial_dose_is_a_missed_dose_and_says_so():
    reading = classify_text("I only took half of my tablet")
    assert reading.classification == "missed" and reading.partial_dose is True


def _transcript(*words: tuple[str, float, float]) -> dict:
    return {"enabled": True, "segments": [{"start": words[0][1], "end": words[-1][2], "text": "",
                                           "words": [{"word": w, "start": s, "end": e, "probability": 0.9}
                                                     for w, s, e in words]}]}


TIMELINE = CheckinTimeline.of([{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
                               {"step_id": "medication", "kind": "prompt", "shown_at_ms": 4000},
                               {"step_id": "sleep", "kind": "prompt", "shown_at_ms": 8000}])


def test_the_answer_is_read_in_the_medication_window_and_says_where_it_came_from():
    transcript = _transcript(("I", 1.0, 1.2), ("forgot", 1.2, 1.6), ("nothing", 1.6, 2.0),  # mood answer
                             ("I", 4.5, 4.6), ("took", 4.6, 4.9), ("it", 4.9, 5.0),  # medication answer
                             ("I", 8.5, 8.6), ("missed", 8.6, 9.0), ("sleep", 9.0, 9.3))  # sleep answer
    inside = self_report(transcript, TIMELINE, 12.0)
    assert inside["window_source"] == "timeline" and inside["classification"] == "taken"
    assert inside["answer"] == "I took it" and inside["words"] == ["took"]
    assert inside["assessed"] is True and inside["observed"] is False
    whole = self_report(transcript, None, 12.0)
    assert whole["window_source"] == "whole_recording" and whole["classification"] == "missed"
    assert whole["window_note"] == "the check-in carries no timeline"


def test_a_timeline_without_the_medication_step_falls_back_to_the_whole_recording_and_says_so():
    timeline = CheckinTimeline.of([{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0}])
    report = self_report(_transcript(("I", 1.0, 1.2), ("took", 1.2, 1.5), ("them", 1.5, 1.8)), timeline, 5.0)
    assert report["window_source"] == "whole_recording" and report["classification"] == "taken"
    assert "no 'medication' step" in report["window_note"]


def test_an_empty_window_or_no_transcript_is_not_assessed_with_the_reason():
    silent = self_report(_transcript(("hello", 0.5, 0.9)), TIMELINE, 12.0)
    assert silent["assessed"] is False and silent["classification"] is None
    assert silent["reason"] == "no words were transcribed in the medication prompt's window"
    off = self_report({"enabled": False, "reason": "the transcript was not requested for this check-in"}, None, 5.0)
    assert off["assessed"] is False and "not requested" in off["reason"]


def test_the_transcript_is_on_by_default():
    assert AudioSettings().transcript_enabled is True


# --- spoken answers through the real model --------------------------------------------------------

@pytest.fixture(scope="module")
def analyse():
    return make_analyse(AudioAnalyser(VAD_MODEL, transcriber=WhisperTranscriber(WHISPER_MODEL, threads=2)), RATE)


def _speak(text: str, voice: str, speed: int, path: Path) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text], check=True,
                   capture_output=True)
    audio, rate = soundfile.read(path, dtype="float32")
    return audio, rate


SPOKEN = [ANSWERS[i] + (i,) for i in (1, 25, 48, 52)]  # didn't miss / forgot / stopped taking / no longer take


@pytest.mark.parametrize(("label", "text", "index"), SPOKEN)
def test_spoken_answers_through_whisper_are_classified(analyse, tmp_path, label, text, index):
    voice, speed = voice_of(index)
    wav = tmp_path / "answer.wav"
    _speak(text, voice, speed, wav)
    report = analyse(wav, lambda *_: None)["self_report"]
    assert report["window_source"] == "whole_recording" and report["assessed"] is True
    assert report["classification"] == label, report["answer"]


def test_a_spoken_checkin_with_a_timeline_reads_only_the_medication_answer(analyse, tmp_path):
    mood, rate = _speak("I felt sad and I missed my friends.", "en-us", 160, tmp_path / "mood.wav")
    meds, _ = _speak("I took my tablets every day.", "en+f3", 160, tmp_path / "meds.wav")
    gap = np.zeros(int(1.0 * rate), dtype=np.float32)
    clip = np.concatenate([mood, gap, meds, gap])
    path = tmp_path / "checkin.wav"
    soundfile.write(path, clip, rate)
    shown_ms = int((len(mood) + len(gap) / 2) / rate * 1000)
    timeline = CheckinTimeline.of([{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
                                   {"step_id": "medication", "kind": "prompt", "shown_at_ms": shown_ms}])
    with_timeline = analyse(path, lambda *_: None, Checkin("job-1", CheckinOptions(), timeline))["self_report"]
    assert with_timeline["window_source"] == "timeline" and with_timeline["classification"] == "taken"
    assert "missed" not in with_timeline["answer"].lower()
    without = analyse(path, lambda *_: None, Checkin("job-2", CheckinOptions(), None))["self_report"]
    # the whole recording holds "missed my friends" too: the rules call that a missed dose, which is why
    # the timeline's window matters
    assert without["window_source"] == "whole_recording" and without["classification"] == "missed"
    off = analyse(path, lambda *_: None, Checkin("job-3", CheckinOptions(analyses=["audio"]), timeline))
    assert off["self_report"]["assessed"] is False


def test_an_answer_in_another_language_is_not_read_by_the_english_rules():
    spanish = _transcript(("no", 4.5, 4.7), ("tomé", 4.7, 5.0), ("nada", 5.0, 5.3)) | {"language": "es"}
    report = self_report(spanish, TIMELINE, 12.0)
    assert report["assessed"] is False and report["classification"] is None
    assert "'es'" in report["reason"] and "English only" in report["reason"]
