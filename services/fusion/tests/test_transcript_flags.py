"""The transcript phrase list: what it flags, what it does not, and how it quotes."""

from __future__ import annotations

import pytest

from services.fusion.transcript_flags import METHOD, NOTE, PATTERNS, screen


def transcript(*sentences: str, start: float = 0.0, with_words: bool = True) -> dict:
    segments, t = [], start
    for sentence in sentences:
        words = []
        for word in sentence.split():
            words.append({"word": word, "start": round(t, 2), "end": round(t + 0.3, 2), "probability": 0.9})
            t += 0.4
        segments.append({"start": words[0]["start"], "end": words[-1]["end"], "text": sentence,
                         "words": words if with_words else []})
        t += 1.0
    return {"enabled": True, "text": " ".join(sentences), "segments": segments, "model": "whisper tiny.en",
            "reason": None, "language": "en", "language_note": "only English is transcribed"}


@pytest.mark.parametrize(("sentence", "category", "phrase"), [
    ("Sometimes I think about killing myself.", "suicide", "killing myself."),
    ("I just want to die.", "suicide", "want to die."),
    ("Honestly everyone would be better off dead", "suicide", "better off dead"),
    ("I don't want to wake up anymore", "suicide", "don't want to wake up"),
    ("I wish I was dead", "suicide", "wish I was dead"),
    ("I've been having suicidal thoughts", "suicide", "suicidal"),
    ("I want to end my life", "suicide", "end my life"),
    ("There is no reason to live", "suicide", "no reason to live"),
    ("Last night I cut myself again", "self_harm", "cut myself"),
    ("I keep thinking about self-harm", "self_harm", "self-harm"),
    ("I took an overdose last year", "self_harm", "overdose"),
    ("The voices tell me to hurt my neighbour", "harm_to_others", "hurt my neighbour"),
    ("I'm going to kill him if he comes back", "harm_to_others", "kill him"),
    ("I bought a knife for protection", "harm_to_others", "bought a knife"),
    ("I stopped taking my medication last week", "stopping_medication", "stopped taking my medication"),
    ("I'm not taking the pills anymore", "stopping_medication", "not taking the pills"),
    ("I threw away my tablets", "stopping_medication", "threw away my tablets"),
    ("I ran out of my meds on Friday", "stopping_medication", "ran out of my meds"),
    ("I've been off my meds for a month", "stopping_medication", "off my meds"),
    ("I skipped my injection", "stopping_medication", "skipped my injection"),
])
def test_each_category_is_flagged_with_its_quoted_words(sentence, category, phrase):
    flags, screened = screen(transcript("Good morning doctor.", sentence))
    assert screened == {"assessed": True, "reason": None, "method": METHOD, "language": "en",
                        "language_note": "only English is transcribed", "languages_covered": ["en", "es"]}
    assert [f["category"] for f in flags] == [category]
    flag = flags[0]
    assert flag["phrase"] == phrase and flag["context"] == sentence
    assert flag["note"] == NOTE == "for clinician review, not a diagnosis" and flag["severity"] == "high"
    assert 1.0 < flag["start"] < flag["end"]  # after the first sentence


@pytest.mark.parametrize("sentence", [
    "I took my medication this morning and I feel fine",
    "My back hurt my sleep a bit",
    "I hurt my knee playing football",
    "We watched a film to kill the time",
    "The doctor stopped by to see me",
    "I stopped smoking last month",
    "Running out of milk is annoying",
    "I feel like dying my hair blue",
])
def test_ordinary_talk_is_not_flagged(sentence):
    assert screen(transcript(sentence))[0] == []


def test_negations_are_left_for_the_clinician_to_hear():
    flags, _ = screen(transcript("I would never hurt myself"))
    assert [(f["category"], f["phrase"]) for f in flags] == [("self_harm", "hurt myself")]


def test_the_time_is_that_of_the_quoted_words():
    flags, _ = screen(transcript("hello", "I want to kill myself", start=10.0))
    # "hello" 10.0-10.3, then 1.0 s; "I" at 11.4, "want" 11.8, "to" 12.2, "kill" 12.6, "myself" 13.0-13.3
    assert flags[0]["start"] == 12.6 and flags[0]["end"] == 13.3


def test_two_patterns_on_the_same_words_are_one_flag_and_curly_apostrophes_match():
    flags, _ = screen(transcript("I don\u2019t want to live, I want to die"))
    assert [f["pattern"] for f in flags] == ["suicide/want_to_die", "suicide/not_want_to_live"]
    assert len({f["start"] for f in flags}) == 2


def test_segments_without_word_timings_use_the_segment_text_and_times():
    flags, _ = screen(transcript("I stopped my pills", with_words=False))
    assert flags[0]["phrase"] == "stopped my pills" and flags[0]["start"] == 0.0


def test_no_transcript_means_no_screen_and_says_why():
    off = {"enabled": False, "text": None, "segments": [], "reason": "transcription is off (AUDIO_TRANSCRIPT_ENABLED)"}
    assert screen(off) == ([], {"assessed": False, "reason": "transcription is off (AUDIO_TRANSCRIPT_ENABLED)",
                                "method": METHOD, "language": None, "language_note": None,
                                "languages_covered": ["en", "es"]})
    assert screen(None)[1]["reason"] == "the check-in was not transcribed"
    empty = {"enabled": True, "text": "", "segments": [], "reason": "no speech detected", "language": "en"}
    assert screen(empty)[1]["assessed"] is False and screen(empty)[1]["reason"] == "no speech detected"


def test_every_pattern_has_a_category_with_words_and_a_unique_name():
    from services.fusion.transcript_flags import CATEGORY_WORDS

    names = [f"{c}/{n}" for c, n, _ in PATTERNS]
    assert len(names) == len(set(names)) and {c for c, _, _ in PATTERNS} == set(CATEGORY_WORDS)


# --- languages ------------------------------------------------------------------------------

def in_language(language: str, *sentences: str) -> dict:
    return transcript(*sentences) | {"language": language, "language_note": None}


@pytest.mark.parametrize(("sentence", "category"), [
    ("A veces pienso en matarme.", "suicide"),
    ("Me quiero suicidar.", "suicide"),
    ("Quisiera estar muerto.", "suicide"),
    ("Quiero morirme.", "suicide"),
    ("He pensado en quitarme la vida.", "suicide"),
    ("Ya no quiero despertar.", "suicide"),
    ("Anoche volví a cortarme.", "self_harm"),
    ("Las voces me dicen que haga daño a mi vecino.", None),  # not a first-person threat in our list's words
    ("Voy a matar a mi vecino.", "harm_to_others"),
    ("Dejé de tomar mi medicación la semana pasada.", "stopping_medication"),
    ("Ya no tomo las pastillas.", "stopping_medication"),
])
def test_spanish_statements_of_the_c_ssrs_are_flagged(sentence, category):
    flags, screened = screen(in_language("es", sentence))
    assert screened["assessed"] is True and screened["language"] == "es"
    assert [f["category"] for f in flags] == ([category] if category else [])


@pytest.mark.parametrize("sentence", [
    "Mi estado de ánimo ha sido bueno esta semana.",
    "Tomé mi medicación todas las mañanas.",
    "Me corté el pelo y fui a caminar.",
    "Tengo miedo de que mi perro se muera.",
])
def test_ordinary_spanish_answers_raise_nothing(sentence):
    flags, screened = screen(in_language("es", sentence))
    assert screened["assessed"] is True and flags == []


def test_a_language_without_a_phrase_list_is_not_assessed_and_named_never_a_silent_pass():
    flags, screened = screen(in_language("ms", "Saya mahu bunuh diri"))
    assert flags == [] and screened["assessed"] is False and screened["language"] == "ms"
    assert "Malay (ms)" in screened["reason"] and "no phrase list" in screened["reason"]
    assert screened["languages_covered"] == ["en", "es"]
    # English words in a Spanish transcript are not matched against the English list
    flags, screened = screen(in_language("es", "I want to kill myself"))
    assert screened["assessed"] is True and flags == []
