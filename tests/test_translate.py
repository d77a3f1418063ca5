"""SpinBot Translate on the tiny NLLB-200 folder (random weights: the text is noise, so the tests
check times, languages, splitting, the glossary and errors)."""
from __future__ import annotations

import shutil

import pytest

from spinbot.nodes import NODE_CLASS_MAPPINGS, runtime
from spinbot.nodes.dubbing import languages, nodes_dubbing, transcribe, translate
from spinbot.nodes.dubbing.languages import LanguageError
from spinbot.nodes.manifest import MissingModelError
from spinbot.nodes.script.segments import Segment
from tests import factory
from tests.factory_dubbing import NLLB_DIR

MODEL = NLLB_DIR
SEGMENTS = (Segment(0, "Guten Morgen, liebe Freunde.", 0.48, 2.013, False),
            Segment(1, "Heute zeige ich euch SpinBot. Es ist schnell.", 2.5, 5.25, False,
                    scene="a desk"),
            Segment(2, "Bis bald!", 6.0, 6.9, False))


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("nllb-models")
    factory.build(root, only=["translation"])
    return root


@pytest.fixture
def models(built, monkeypatch):
    monkeypatch.setenv("SPINBOT_MODELS_DIR", str(built))
    return built


def run(segments=SEGMENTS, target="French", source=nodes_dubbing.FROM_TRANSCRIPTION,
        glossary="", max_tokens=200, language="de"):
    return nodes_dubbing.SpinBotTranslate().run(segments, MODEL, target, source, glossary,
                                                max_tokens, language)


def test_registered_with_language_names():
    cls = NODE_CLASS_MAPPINGS["SpinBotTranslate"]
    assert cls.RETURN_NAMES == ("segments", "text", "report")
    required = cls.INPUT_TYPES()["required"]
    names = required["target_language"][0]
    assert len(names) == 202 and {"German", "French", "Chinese (Simplified)"} <= set(names)
    assert len({languages.nllb_code(n) for n in names}) == 202  # each name its own code
    assert required["source_language"][0][0] == nodes_dubbing.FROM_TRANSCRIPTION


def test_language_table_maps_names_and_whisper_codes_to_nllb_codes():
    assert languages.nllb_code("German") == "deu_Latn"
    assert languages.nllb_code("de") == "deu_Latn"  # Whisper's code, from SpinBot Transcribe
    assert languages.nllb_code("zh") == "zho_Hans" and languages.nllb_code("ar") == "arb_Arab"
    assert languages.nllb_code("chinese (traditional)") == "zho_Hant"
    assert languages.nllb_code("spa_Latn") == "spa_Latn"
    codes = [e["code"] for e in languages.nllb_languages()]
    assert len(codes) == len(set(codes)) == 202
    # every Whisper language maps to an NLLB code, except the three FLORES-200 lacks
    missing = []
    for code in languages.whisper_languages():
        try:
            assert languages.nllb_code(code) in codes
        except LanguageError:
            missing.append(code)
    assert sorted(missing) == ["br", "haw", "la"]  # Breton, Hawaiian, Latin


def test_translation_keeps_every_segment_time_exactly_and_repeats(models):
    segments, text, report = run()
    assert len(segments) == len(SEGMENTS)
    for new, old in zip(segments, SEGMENTS):
        assert (new.index, new.start, new.end, new.estimated, new.scene) == \
            (old.index, old.start, old.end, old.estimated, old.scene)
        assert isinstance(new.text, str) and new.text.strip()
    assert text == " ".join(s.text for s in segments)
    assert "German (deu_Latn) -> French (fra_Latn)" in report
    # the second segment has two sentences: translated as two pieces
    assert "4 piece(s) translated" in report
    again = run()
    assert again[0] == segments and "3 of 3 segment(s) reused from the cache" in again[2]
    shutil.rmtree(transcribe.cache_dir())
    assert run()[0] == segments  # translated afresh: greedy decoding is deterministic


def test_rerun_after_cancel_translates_only_unfinished_segments(models, monkeypatch):
    real, calls = translate._generate, []

    def cancelled_on_second(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise runtime.Interrupted("processing interrupted")
        return real(*args, **kw)

    monkeypatch.setattr(translate, "_generate", cancelled_on_second)
    with pytest.raises(runtime.Interrupted):
        run(target="Spanish")
    calls.clear()
    monkeypatch.setattr(translate, "_generate",
                        lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
    segments, _text, report = run(target="Spanish")
    assert len(calls) == 2 and "1 of 3 segment(s) reused from the cache" in report
    assert [s.start for s in segments] == [s.start for s in SEGMENTS]


def test_long_sentences_are_split_within_the_token_limit_and_joined(models):
    translator = translate.load_translator(MODEL)
    long = "Wir fahren morgen, wenn es nicht regnet, mit dem Zug nach Berlin " * 4 + "und zurück."
    pieces = translate.split_to_tokens(long, translator.token_count, 40)
    assert len(pieces) > 1 and all(translator.token_count(p) <= 40 for p in pieces)
    assert " ".join(pieces).split() == long.split()  # nothing lost or reordered
    result = translate.translate_segments([Segment(0, long, 1.0, 9.0, False)], translator,
                                          "German", "English", max_tokens=40)
    assert result.split_sentences == 1 and result.pieces == len(pieces)
    assert result.segments[0].start == 1.0 and result.segments[0].end == 9.0


def test_glossary_terms_are_kept_or_reported_as_dropped(models):
    terms = translate.parse_glossary("# product names\nSpinBot\nBerlin = Berlín\n\nNew York "
                                     "Times -> NYT")
    assert [t.source for t in terms] == ["New York Times", "SpinBot", "Berlin"]
    protected, found = translate.protect("SpinBot in Berlin; spinbot liest die New York Times.",
                                         terms)
    assert protected == "[T1] in [T2]; [T3] liest die [T4]."
    assert [found[k].target for k in sorted(found)] == ["SpinBot", "Berlín", "SpinBot", "NYT"]
    restored, lost = translate.restore("[T1] à [ T2 ]; [t3] lit le [T9].", found)
    assert restored == "SpinBot à Berlín; SpinBot lit le ." and [t.source for t in lost] == \
        ["New York Times"]
    # through the model: a segment that is only a term is kept exactly; elsewhere each term is
    # either in the output as given or named in the report as dropped
    segments, _text, report = run(segments=SEGMENTS + (Segment(3, "SpinBot", 7.0, 7.5, False),),
                                  glossary="SpinBot\nFreunde = amis")
    assert segments[3].text == "SpinBot"
    for k, term in ((0, "amis"), (1, "SpinBot")):
        assert term in segments[k].text or (f"(segment {k})" in report and "dropped" in report)
    with pytest.raises(translate.TranslateError, match="glossary line 2"):
        translate.parse_glossary("ok\n = nothing")


def test_glossary_placeholders_the_model_copies_are_restored(models, monkeypatch):
    """A scripted model that copies its input (as NLLB does with [T1]-like tokens) gets the
    protected text and gives back every term as the glossary says."""
    seen = []

    def copying(_translator, pieces, *_args):
        seen.extend(pieces)
        return [p.upper().replace("[T", "[t") for p in pieces]  # case changes, tokens kept

    monkeypatch.setattr(translate, "_generate", copying)
    segments, _text, report = run(glossary="SpinBot\nFreunde = amis")
    assert "Guten Morgen, liebe [T1]." in seen and "Heute zeige ich euch [T1]." in seen
    assert segments[0].text == "GUTEN MORGEN, LIEBE amis."
    assert segments[1].text == "HEUTE ZEIGE ICH EUCH SpinBot. ES IST SCHNELL."
    assert "glossary: 2 term(s)" in report and "dropped" not in report


def test_same_source_and_target_copies_the_text(models):
    segments, _text, report = run(target="German")
    assert segments == SEGMENTS and "copied unchanged" in report


def test_unknown_languages_list_close_names(models):
    with pytest.raises(LanguageError, match=r"unknown language 'Germanish'; closest: German"):
        run(language="Germanish")
    with pytest.raises(LanguageError, match=r"source language: Latin \(la\) is not one of "
                                            "NLLB-200's 202 languages"):
        run(language="la")  # Whisper transcribes Latin; NLLB has no Latin
    with pytest.raises(LanguageError, match="target language: unknown language 'Frnch'.*French"):
        translate.translate_segments(SEGMENTS, translate.load_translator(MODEL), "de", "Frnch")


def test_bad_inputs_give_clear_errors(models):
    with pytest.raises(translate.TranslateError, match="no 'language' is connected"):
        run(language=None)
    with pytest.raises(translate.TranslateError, match="'segments' is empty"):
        run(segments=())
    segments = run(source="German", language=None)[0]  # a chosen source needs no connection
    assert [s.start for s in segments] == [s.start for s in SEGMENTS]
    blank = Segment(3, "  ", 7.0, 7.4, False)  # an empty segment stays as it is, unreported
    segments, _text, report = run(segments=SEGMENTS + (blank,))
    assert segments[3] == blank and "segment 3" not in report


def test_missing_model_names_folder_and_source(spinbot_dirs):
    with pytest.raises(MissingModelError) as err:
        run()
    text = str(err.value)
    assert f"'{MODEL}'" in text and "'translation'" in text
    assert "https://huggingface.co/facebook/nllb-200-distilled-600M" in text
    (spinbot_dirs["models"] / "translation" / "half").mkdir(parents=True)
    (spinbot_dirs["models"] / "translation" / "half" / "config.json").write_text("{}")
    with pytest.raises(translate.TranslateError, match="'half'.*model.safetensors, "
                                                       "tokenizer.json missing"):
        nodes_dubbing.SpinBotTranslate().run(SEGMENTS, "half", "French", "German", "", 200)
