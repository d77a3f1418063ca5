"""Sentence segmentation, duration estimates, trimming and the Direct Script node."""
from __future__ import annotations

import pytest

from spinbot.nodes.script.nodes_script import SpinBotDirectScript
from spinbot.nodes.script.ollama_client import ScriptError
from spinbot.nodes.script.script import DEFAULT_SCENE
from spinbot.nodes.script.segments import (Segment, SegmentError, coerce_segments,
                                           estimate_seconds, fit_to_duration, language_code,
                                           make_segments, retime, speech_units, split_long,
                                           split_sentences, trim_to_seconds)


def test_english_abbreviations_decimals_quotes_and_ellipses():
    text = ('Mr. Smith paid $3.50 for coffee at 7 a.m. on Main St. yesterday. '
            'Dr. Jones, e.g. the one from the U.S. Navy, said "Stop!" and left. '
            '"Are you sure?" she asked. Pi is about 3.14, see example.com for more. '
            'Well... I think so. J. R. R. Tolkien wrote it. Really?! Yes.')
    assert split_sentences(text, "English") == [
        "Mr. Smith paid $3.50 for coffee at 7 a.m. on Main St. yesterday.",
        'Dr. Jones, e.g. the one from the U.S. Navy, said "Stop!" and left.',
        '"Are you sure?" she asked.',
        "Pi is about 3.14, see example.com for more.",
        "Well...",
        "I think so.",
        "J. R. R. Tolkien wrote it.",
        "Really?!",
        "Yes.",
    ]


def test_quoted_sentence_ending_inside_the_quotes():
    assert split_sentences('He said "Stop." Then he ran. \'Fine.\' It was over.') == [
        'He said "Stop."', "Then he ran.", "'Fine.'", "It was over."]


def test_number_abbreviations_list_markers_and_initials():
    text = ("Yes. No. See No. 5 and Fig. 3 now.\n\n1. Buy milk. 2. Drink it. "
            "J. S. Bach wrote it.")
    assert split_sentences(text) == ["Yes.", "No.", "See No. 5 and Fig. 3 now.", "1. Buy milk.",
                                     "2. Drink it.", "J. S. Bach wrote it."]


def test_german_abbreviations_ordinals_and_quotes():
    text = ("Am 3. Oktober feiern wir z. B. den Tag der Deutschen Einheit. "
            "Dr. Müller sagt: „Kommt alle her!“ Dann ging er. "
            "Das kostet ca. 3,50 Euro, d.h. fast nichts. "
            "Das war im Jahr 2020. Danach kamen Brot, Butter usw. "
            "Er las das Buch Nr. 5 bis zum Ende.")
    assert split_sentences(text, "Deutsch") == [
        "Am 3. Oktober feiern wir z. B. den Tag der Deutschen Einheit.",
        "Dr. Müller sagt: „Kommt alle her!“",
        "Dann ging er.",
        "Das kostet ca. 3,50 Euro, d.h. fast nichts.",
        "Das war im Jahr 2020.",
        "Danach kamen Brot, Butter usw.",
        "Er las das Buch Nr. 5 bis zum Ende.",
    ]


def test_chinese_punctuation_without_spaces():
    text = "他说：“你好。”然后走了。今天天气很好！你去吗？圆周率约是3.14。好的"
    assert split_sentences(text, "中文") == [
        "他说：“你好。”", "然后走了。", "今天天气很好！", "你去吗？", "圆周率约是3.14。", "好的"]


def test_blank_lines_end_segments_and_single_newlines_do_not():
    text = "A title without a stop\n\nThe first line\ncontinues here. Next one.\n\n\n  Last  "
    assert split_sentences(text) == [
        "A title without a stop", "The first line continues here.", "Next one.", "Last"]


def test_long_sentence_is_split_at_commas_into_pieces_that_fit():
    sentence = ("When the storm finally passed, the villagers came out of their houses, counted "
                "the broken roofs and fallen trees, and then, without a word, began to rebuild "
                "everything the wind had taken from them that night.")
    pieces = split_long(sentence, max_seconds=4.0, words_per_second=2.5)
    assert len(pieces) > 1 and " ".join(pieces) == sentence
    assert all(estimate_seconds(p, 2.5) <= 4.0 for p in pieces)
    assert all(p.endswith(",") for p in pieces[:-2])  # cut at commas while there are any


def test_long_chinese_sentence_is_split_at_chinese_commas():
    sentence = ("这是一个非常长的句子，它一直在继续，里面有很多从句，而且它不会停下来，"
                "直到最后它终于停下来了，在所有这些话都被大声说出来之后。")
    pieces = split_long(sentence, max_seconds=3.0, words_per_second=2.5)
    assert "".join(pieces) == sentence and len(pieces) >= 4
    assert all(p[-1] in "，。" for p in pieces)
    assert all(estimate_seconds(p, 2.5) <= 3.0 for p in pieces)


def test_long_sentence_without_commas_is_split_between_words():
    sentence = " ".join(f"word{i}" for i in range(40)) + "."
    pieces = split_long(sentence, max_seconds=5.0, words_per_second=2.5)
    assert " ".join(pieces) == sentence and all(len(p.split()) <= 12 for p in pieces)


def test_speech_units_count_words_and_half_cjk_characters():
    assert speech_units("Hello, wonderful world!") == 3
    assert speech_units("It's 3.5 km") == 3
    assert speech_units("你好世界") == 2
    assert speech_units("我有3个iPhone") == 3.5  # 我 有 个 (1.5) + "3" + "iPhone"


def test_segments_are_consecutive_with_estimated_timings():
    segments = make_segments("Short one. This sentence has quite a few more words in it. End.",
                             words_per_second=2.0, pause=0.5)
    assert [s.index for s in segments] == [0, 1, 2]
    assert all(s.estimated and s.end > s.start for s in segments)
    assert all(b.start == pytest.approx(a.end + 0.5) for a, b in zip(segments, segments[1:]))
    assert segments[1].duration == pytest.approx(10 / 2.0)
    assert segments[0].start == 0.0


def test_make_segments_rejects_a_bad_rate():
    with pytest.raises(SegmentError, match="words_per_second"):
        make_segments("Hello.", words_per_second=0)


def test_trim_keeps_whole_sentences_within_the_budget():
    text = "One two three four five. Six seven eight nine ten. Eleven twelve thirteen."
    kept, trimmed = trim_to_seconds(text, max_seconds=4.5, words_per_second=2.5, pause=0.3)
    assert kept == "One two three four five. Six seven eight nine ten." and trimmed
    assert trim_to_seconds(text, 60.0) == (text, False)


def test_trim_cuts_an_overlong_first_sentence_at_a_clause():
    kept, trimmed = trim_to_seconds("One two three four five, six seven eight nine ten, "
                                    "eleven twelve thirteen fourteen.", max_seconds=2.5)
    assert trimmed and kept == "One two three four five."


def test_retime_lays_measured_durations_back_to_back():
    segments = make_segments("First. Second one. Third.")
    measured = retime(segments, [1.25, 2.0, 0.5], gap=0.1)
    assert [(s.start, s.end) for s in measured] == [(0.0, 1.25), (1.35, 3.35), (3.45, 3.95)]
    assert not any(s.estimated for s in measured)
    assert [s.text for s in measured] == [s.text for s in segments]
    with pytest.raises(SegmentError, match="2 durations for 3 segments"):
        retime(segments, [1.0, 2.0])


def test_fit_to_duration_stretches_estimates_only():
    segments = make_segments("First. Second one. Third.")
    fitted = fit_to_duration(segments, 12.0)
    assert fitted[-1].end == pytest.approx(12.0) and fitted[0].start == 0.0
    k = 12.0 / segments[-1].end
    assert all(f.start == pytest.approx(s.start * k, abs=1e-3)
               and f.end == pytest.approx(s.end * k, abs=1e-3) for f, s in zip(fitted, segments))
    measured = retime(segments, [1.0, 1.0, 1.0])
    assert fit_to_duration(measured, 12.0) == measured


def test_segments_round_trip_through_dicts():
    segments = make_segments("Hello there. General Kenobi!")
    dicts = [s.to_dict() for s in segments]
    assert coerce_segments(dicts) == segments
    with pytest.raises(SegmentError, match="not a segment"):
        coerce_segments([{"text": "no timing"}])
    with pytest.raises(SegmentError, match="not a segment"):
        coerce_segments(["just text"])


@pytest.mark.parametrize("name, code", [("English", "en"), ("de-AT", "de"), ("Deutsch", "de"),
                                        ("中文", "zh"), ("Mandarin Chinese", "zh"), ("ja", "ja"),
                                        ("Klingon", "")])
def test_language_codes(name, code):
    assert language_code(name) == code


def test_direct_script_node_outputs():
    node = SpinBotDirectScript()
    stage, narrative, script, info = node.make(
        narration="  Hello, I am Ada. Today: numbers!\n\nLet us begin.  ", language="English",
        words_per_second=2.5, max_segment_seconds=10.0, scene_prompt="", trigger_word="ohwx man")
    assert narrative == "Hello, I am Ada. Today: numbers!\n\nLet us begin."
    assert stage == f"ohwx man, {DEFAULT_SCENE}"
    assert [s.text for s in script.segments] == ["Hello, I am Ada.", "Today: numbers!",
                                                  "Let us begin."]
    assert script.source == "direct" and "3 segments" in info
    again = node.make("  Hello, I am Ada. Today: numbers!\n\nLet us begin.  ", "English", 2.5,
                      10.0, "", "ohwx man")
    assert again[2] == script


def test_direct_script_keeps_a_given_scene_and_refuses_empty_narration():
    stage, *_ = SpinBotDirectScript().make("Hi.", "English", 2.5, 10.0,
                                           scene_prompt="a lighthouse at dusk")
    assert stage == "a lighthouse at dusk"
    with pytest.raises(ScriptError, match="narration is empty"):
        SpinBotDirectScript().make(" \n ", "English", 2.5, 10.0)


def test_segment_is_a_plain_value():
    seg = Segment(0, "Hi.", 0.0, 1.5)
    assert seg.duration == 1.5 and seg.estimated and Segment.from_dict(seg.to_dict()) == seg
