"""Per-question markers (answers.py): the split at the timeline's prompts, each answer's markers
and transcript, what a check-in without a timeline says; then the real path, an espeak-ng
check-in with known prompt times through the analyser (Silero VAD and Whisper tiny.en)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.audio import answers as answer_markers
from services.audio import known_signals as known
from services.audio.answers import MARKERS, answers, mattr, validated_answer_markers
from services.audio.quality import AudioQuality
from services.audio.timing import SpeechTiming
from services.audio.vad import Segment
from shared.domain.markers import parse
from shared.domain.timeline import NO_TIMELINE_REASON, CheckinTimeline

REPO = Path(__file__).resolve().parents[3]
TIMELINE = CheckinTimeline.of([{"step_id": "mood", "kind": "prompt", "shown_at_ms": 0},
                               {"step_id": "sleep", "kind": "prompt", "shown_at_ms": 10_000},
                               {"step_id": "show_pill", "kind": "dosing", "shown_at_ms": 20_000}])


def _word(text: str, start: float, end: float) -> dict:
    return {"word": text, "start": start, "end": end, "probability": 0.9}


def _transcript(words: list[dict], language: str = "en") -> dict:
    return {"enabled": True, "segments": [{"start": words[0]["start"], "end": words[-1]["end"], "text": "",
                                           "words": words}], "language": language}


@pytest.fixture
def all_validated(monkeypatch):
    monkeypatch.setattr(answer_markers, "VALIDATED", {name: frozenset({"*"}) for name in MARKERS})


def _timing() -> SpeechTiming:
    # mood: speech 1.5-4.0 and 4.5-7.0 (one pause); sleep: speech 12.0-13.0; nothing after the dosing step
    return SpeechTiming((Segment(1.5, 4.0), Segment(4.5, 7.0), Segment(12.0, 13.0)), 25.0)


def test_each_prompt_gets_its_answer_with_latency_timing_and_words(all_validated):
    first = [_word(w, 1.6 + 0.45 * i, 1.9 + 0.45 * i) for i, w in enumerate("I feel calm and I slept well".split())]
    second = [_word(w, 4.6 + 0.4 * i, 4.9 + 0.4 * i) for i, w in enumerate("the garden was green today again".split())]
    late = [_word("Fine.", 12.2, 12.8)]
    block = answers(_timing(), _transcript(first + second + late), TIMELINE, AudioQuality(16000, snr_db=40.0))

    assert block["assessed"] is True and block["reason"] is None and block["method"]
    mood, sleep = block["items"]
    assert (mood["step_id"], mood["start_s"], mood["end_s"], mood["clipped"]) == ("mood", 0.0, 10.0, False)
    m = {name: parse(marker) for name, marker in mood["markers"].items()}
    assert set(m) == set(MARKERS)
    assert m["response_latency"].value == 1.5 and m["response_latency"].unit == "s"
    assert m["speaking_time"].value == 5.0 and m["speaking_fraction"].value == 50.0
    assert m["pause_count"].value == 1 and m["pause_rate"].value == pytest.approx(60 / 5.5, abs=0.01)
    assert m["word_count"].value == 13 and m["speech_rate"].unit == "words per min"
    assert m["speech_rate"].value == pytest.approx(13 / (5.5 / 60), abs=0.01)
    assert m["mean_length_of_utterance"].value == 6.5  # 7 words in the first stretch, 6 in the second
    assert m["mattr"].value == pytest.approx(mattr([w["word"] for w in first + second]), abs=1e-3)
    assert mood["transcript"] == {"text": "I feel calm and I slept well the garden was green today again",
                                  "language": "en"}

    s = {name: parse(marker) for name, marker in sleep["markers"].items()}
    assert s["response_latency"].value == 2.0 and s["word_count"].value == 1
    assert not s["mattr"].assessed and "MATTR needs at least 10" in s["mattr"].reason
    assert not s["pause_rate"].assessed and "1.5 s" in s["pause_rate"].reason  # 1 s of speech
    assert "short_speech" in s["speaking_time"].quality_flags


def test_mattr_is_the_mean_type_token_ratio_of_every_window():
    assert mattr("a b c d e f g h i j".split()) == 1.0
    assert mattr("a a b b c c d d e e".split()) == 0.5
    assert mattr("Yes, yes. YES yes! no no no no no no".split()) == 0.2  # case and punctuation do not count
    assert mattr("one two".split()) is None
    assert mattr("el niño comió el pan y el niño durmió muy bien".split()) == pytest.approx((0.7 + 0.8) / 2)


def test_an_answer_without_speech_or_begun_before_its_prompt_says_why(all_validated):
    timing = SpeechTiming((Segment(8.0, 11.0),), 25.0)  # speaking across the 10 s prompt, then silence
    block = answers(timing, _transcript([_word("hello", 8.2, 8.6)]), TIMELINE, AudioQuality(16000))
    mood, sleep = block["items"]
    assert mood["markers"]["response_latency"]["value"] == 8.0
    assert "answer_runs_into_next_step" in mood["markers"]["response_latency"]["quality_flags"]
    latency = parse(sleep["markers"]["response_latency"])
    assert not latency.assessed and "already speaking" in latency.reason
    assert sleep["markers"]["word_count"]["value"] == 0 and sleep["transcript"]["text"] == ""
    assert "no words were transcribed" in sleep["markers"]["mattr"]["reason"]

    silent = answers(SpeechTiming((), 25.0), {"enabled": False, "reason": "transcription is off"}, TIMELINE,
                     AudioQuality(16000))
    for item in silent["items"]:
        assert "no speech" in item["markers"]["response_latency"]["reason"]
        assert "no transcript" in item["markers"]["word_count"]["reason"] and item["transcript"] is None


def test_a_checkin_without_a_timeline_keeps_whole_recording_markers_and_says_so(all_validated):
    block = answers(_timing(), {"enabled": False}, None, AudioQuality(16000))
    assert block == {"assessed": False, "reason": NO_TIMELINE_REASON, "method": answer_markers.METHOD, "flags": [],
                     "items": []}
    after_end = CheckinTimeline.of([{"step_id": "mood", "kind": "prompt", "shown_at_ms": 30_000}])
    late = answers(_timing(), {"enabled": False}, after_end, AudioQuality(16000))
    assert late["assessed"] is False and "no question within the recording" in late["reason"]
    assert "after the recording ended" in late["flags"][0]


def test_a_marker_without_measured_validity_is_not_assessed(monkeypatch):
    monkeypatch.setattr(answer_markers, "VALIDATED", {"response_latency": frozenset({"*"}),
                                                      "word_count": frozenset({"en"})})
    words = [_word("hola", 2.0, 2.4)]
    mood = answers(_timing(), _transcript(words, "es"), TIMELINE, AudioQuality(16000))["items"][0]
    assert mood["markers"]["response_latency"]["assessed"] is True
    assert mood["markers"]["speaking_time"]["reason"] == answer_markers.NOT_VALIDATED
    # a word marker measured on English transcripts only says so for a Spanish one
    assert mood["markers"]["word_count"]["reason"] == ("its accuracy on transcripts in 'es' has not been measured "
                                                       "(measured in en)")
    english = answers(_timing(), _transcript(words, "en"), TIMELINE, AudioQuality(16000))["items"][0]
    assert english["markers"]["word_count"]["value"] == 1


def test_validity_needs_the_split_to_hold_and_each_marker_to_follow_its_truth():
    good = {"n": 20, "measured": 20, "p90": 0.05, "r": 0.99}
    report = {"segmentation": {"clean, en": {"n": 20, "right": 20}, "noise, es": {"n": 20, "right": 19}},
              "markers": {"response_latency": {"clean, en": good, "noise, es": good | {"p90": 0.5}},
                          "speaking_time": {"clean, en": good, "noise, es": good},
                          "mattr": {"clean, en": good, "clean, es": good | {"r": 0.3}},
                          "word_count": {"clean, en": good | {"measured": 15}, "clean, es": good}}}
    assert validated_answer_markers(report) == {"speaking_time": {"*"}, "mattr": {"en"}, "word_count": {"es"}}
    report["segmentation"]["noise, es"]["right"] = 10
    assert validated_answer_markers(report) == {}
    assert validated_answer_markers({}) == {}


def test_the_stored_bench_output_validates_latency_and_the_split():
    stored = answer_markers.load_validity()
    assert stored["written_by"] == "python -m bench.audio --answers --write"
    assert answer_markers.VALIDATED == validated_answer_markers(stored)
    assert answer_markers.VALIDATED["response_latency"] == {"*"}


# --- the real path: espeak-ng answers at known times, the real VAD and Whisper tiny.en ---------


def test_an_espeak_checkin_is_split_into_its_answers_at_the_known_times(tmp_path):
    from services.audio.analysis import AudioAnalyser
    from services.audio.transcript import WhisperTranscriber

    rate = known.RATE
    plan = [("mood", 1.2, "I felt calm this week."), ("sleep", 2.5, "I slept well last night.")]
    parts, entries, at = [], [], 0
    for step, latency, text in plan:
        entries.append({"step_id": step, "kind": "prompt", "shown_at_ms": round(1000 * at / rate)})
        speech = known.speak(text, voice="en-us")
        parts += [np.zeros(int(latency * rate), np.float32), speech, np.zeros(2 * rate, np.float32)]
        at += int(latency * rate) + speech.size + 2 * rate
    wav = known.write_wav(tmp_path / "answers.wav", np.concatenate(parts))
    analyser = AudioAnalyser(REPO / "models" / "silero_vad.onnx",
                             transcriber=WhisperTranscriber(REPO / "models" / "whisper-tiny.en"))
    block = analyser.analyse(wav, timeline=CheckinTimeline.of(entries))["answers"]

    assert block["assessed"] is True
    for item, (step, latency, text) in zip(block["items"], plan):
        assert item["step_id"] == step
        found = parse(item["markers"]["response_latency"])
        assert found.assessed and found.value == pytest.approx(latency, abs=answer_markers.MAX_LATENCY_P90_S)
        said = item["transcript"]["text"].lower()
        assert said.split()[:2] == text.lower().split()[:2] and item["transcript"]["language"] == "en"
