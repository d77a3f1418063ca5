"""SpinBot Script (Ollama) against a fake Ollama server on 127.0.0.1 started by each test."""
from __future__ import annotations

import json
import socket
import time

import pytest

from spinbot.nodes import runtime
from spinbot.nodes.script import ollama_client
from spinbot.nodes.script.nodes_script import DEFAULT_MODEL, SpinBotScriptOllama
from spinbot.nodes.script.ollama_client import (ModelNotFound, OllamaUnreachable, ScriptError,
                                                normalize_host)
from spinbot.nodes.script.prompts import SCRIPT_SCHEMA, parse_reply, shipped_system_prompt
from spinbot.nodes.script.script import Script
from tests.fake_ollama import FakeOllama

MODEL = DEFAULT_MODEL  # the fake server has the recommended model pulled
STAGE = "ohwx person, head and shoulders, sunny balcony, golden hour, 85mm photo"
NARRATIVE = ("Good morning! Today we talk about the sea. "
             "It covers most of our planet, and it feeds billions. Let us protect it.")
VALID = json.dumps({"stage": STAGE, "narrative": NARRATIVE})


@pytest.fixture
def fake():
    server = FakeOllama(models=[MODEL, "llama3.2:3b"], replies=[VALID]).start()
    ollama_client.forget_cached_models()
    yield server
    server.stop()
    ollama_client.forget_cached_models()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(host, **overrides):
    inputs = dict(topic="Why the ocean matters", model=MODEL, host=host, language="English",
                  tone="warm", target_seconds=30.0, words_per_second=2.5, seed=1234,
                  temperature=0.3, keep_alive=0, max_retries=2, max_segment_seconds=10.0,
                  trigger_word="ohwx person")
    inputs.update(overrides)
    return SpinBotScriptOllama().write(**inputs)


def test_request_carries_schema_seed_temperature_and_keep_alive(fake):
    run(fake.url)
    (body,) = fake.chats
    assert body["model"] == MODEL
    assert body["format"] == SCRIPT_SCHEMA
    assert body["options"]["seed"] == 1234
    assert body["options"]["temperature"] == pytest.approx(0.3)
    assert body["options"]["num_predict"] > 75  # room for a 75-word narrative and the stage
    assert body["keep_alive"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": shipped_system_prompt()}
    assert user["role"] == "user"
    for expected in ("Why the ocean matters", "English", "warm", "75 words", '"ohwx person"'):
        assert expected in user["content"]


def test_valid_reply_gives_stage_narrative_and_segments(fake):
    stage, narrative, script, info = run(fake.url)
    assert stage == STAGE and narrative == NARRATIVE
    assert isinstance(script, Script) and script.source == "ollama" and script.model == MODEL
    assert [s.text for s in script.segments] == [
        "Good morning!", "Today we talk about the sea.",
        "It covers most of our planet, and it feeds billions.", "Let us protect it."]
    assert all(s.estimated for s in script.segments)
    assert "4 segments" in info and not script.trimmed


def test_invalid_json_twice_then_valid_succeeds_after_retry(fake):
    fake.replies = ["Sure! Here is your script: stage: a beach", '{"stage": "a beach"}', VALID]
    stage, narrative, script, info = run(fake.url)
    assert narrative == NARRATIVE
    chats = fake.chats
    assert len(chats) == 3
    # each retry replays the bad answer and says what was wrong with it
    assert chats[1]["messages"][2] == {"role": "assistant", "content": fake_reply(0)}
    assert "not valid JSON" in chats[1]["messages"][3]["content"]
    assert '"narrative" is missing' in chats[2]["messages"][-1]["content"]
    assert all(c["format"] == SCRIPT_SCHEMA and c["options"]["seed"] == 1234 for c in chats)
    assert "attempt 1" in info and "attempt 2" in info


def fake_reply(i: int) -> str:
    return ["Sure! Here is your script: stage: a beach", '{"stage": "a beach"}'][i]


def test_always_invalid_fails_with_the_reply_in_the_message(fake):
    fake.replies = ['{"stage": 42, "narrative": ""}']
    with pytest.raises(ScriptError) as err:
        run(fake.url, max_retries=2)
    assert len(fake.chats) == 3
    message = str(err.value)
    assert "3 attempts" in message and MODEL in message and fake.url in message
    assert '"stage" must be a string' in message and '"narrative" is empty' in message
    assert '{"stage": 42, "narrative": ""}' in message  # what came back


def test_cut_off_reply_asks_for_a_shorter_one(fake):
    fake.replies = [('{"stage": "a beach", "narrative": "Once upon a ti', "length"), VALID]
    run(fake.url)
    assert "shorter" in fake.chats[1]["messages"][-1]["content"]


def test_server_down_names_the_host():
    host = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(OllamaUnreachable) as err:
        run(host)
    assert host in str(err.value) and "ollama serve" in str(err.value)


def test_missing_model_gives_the_pull_hint(fake):
    with pytest.raises(ModelNotFound) as err:
        run(fake.url, model="llama9:70b")
    message = str(err.value)
    assert "ollama pull llama9:70b" in message and fake.url in message
    assert MODEL in message  # says what the server does have


def test_custom_model_overrides_the_dropdown(fake):
    run(fake.url, model="nonexistent:1b", custom_model=" llama3.2:3b ")
    assert fake.chats[0]["model"] == "llama3.2:3b"


def test_same_seed_same_request_and_script_different_seed_differs(fake):
    def by_seed(body):
        seed = body["options"]["seed"]
        return json.dumps({"stage": f"scene {seed}", "narrative": f"Take {seed}."})

    fake.replies = [by_seed]
    first, second, other = run(fake.url), run(fake.url), run(fake.url, seed=7)
    assert first[:2] == second[:2] and first[2].segments == second[2].segments
    assert fake.chats[0] == fake.chats[1]
    assert other[1] != first[1] and fake.chats[2]["options"]["seed"] == 7


def test_long_reply_is_trimmed_at_a_sentence_boundary(fake):
    long = ("One two three four five six. Seven eight nine ten eleven twelve. "
            "Thirteen fourteen fifteen sixteen seventeen eighteen.")
    fake.replies = [json.dumps({"stage": "a room", "narrative": long})]
    _stage, narrative, script, info = run(fake.url, target_seconds=6.0, words_per_second=2.5)
    assert narrative == "One two three four five six. Seven eight nine ten eleven twelve." \
        or narrative == "One two three four five six."
    assert long.startswith(narrative) and script.trimmed and "trimmed" in info
    assert script.estimated_seconds <= 6.0


def test_trigger_word_is_put_into_the_stage_when_the_model_forgets(fake):
    fake.replies = [json.dumps({"stage": "a person in a garden", "narrative": "Hello there."})]
    stage, *_ = run(fake.url, trigger_word="sks woman")
    assert stage.startswith("sks woman") and "a person in a garden" in stage


def test_keep_alive_and_system_prompt_override_are_forwarded(fake):
    run(fake.url, keep_alive=-1, system_prompt="You write haiku scripts. Reply in JSON.")
    body = fake.chats[0]
    assert body["keep_alive"] == -1
    assert body["messages"][0]["content"] == "You write haiku scripts. Reply in JSON."


def test_reply_is_data_only_and_cleaned_for_speech():
    raw = ('```json\n{"stage": "x", "narrative": "[smiles] Hello **there** \\ud83d\\ude00 '
           'eval(\'6*7\') {{ 6*7 }}"}\n```')
    stage, narrative = parse_reply(raw)
    assert narrative == "Hello there eval('6*7') {{ 6*7 }}"  # text, never evaluated
    # an extra field is ignored (issue 14 follow-up), never run or spoken
    assert parse_reply('{"stage": "x", "narrative": "y", "code": "print(1)"}') == ("x", "y")


def test_proxy_variables_are_ignored(fake, monkeypatch):
    dead = f"http://127.0.0.1:{closed_port()}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
        monkeypatch.setenv(name, dead)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert run(fake.url)[1] == NARRATIVE


def test_redirects_to_another_host_are_not_followed(fake):
    with FakeOllama(models=[MODEL], replies=[VALID]) as elsewhere:
        fake.redirect_chat_to = elsewhere.url
        with pytest.raises(ScriptError, match="307"):
            run(fake.url)
        assert elsewhere.requests == []


def test_cancel_stops_the_stream(fake):
    runtime.request_interrupt()
    try:
        with pytest.raises(runtime.Interrupted):
            run(fake.url)
    finally:
        runtime.request_interrupt(False)


def test_dropdown_lists_the_servers_models(fake, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", fake.url)
    spec = SpinBotScriptOllama.INPUT_TYPES()["required"]["model"]
    assert spec[0][:2] == sorted([MODEL, "llama3.2:3b"]) and DEFAULT_MODEL in spec[0]
    assert spec[1]["default"] == DEFAULT_MODEL
    SpinBotScriptOllama.INPUT_TYPES()
    assert [r.path for r in fake.requests] == ["/api/tags"]  # cached for the next call


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_dropdown_falls_back_quickly_when_the_server_does_not_answer(monkeypatch, kind):
    ollama_client.forget_cached_models()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        if kind == "silent":
            listener.listen(4)  # accepts connections, never answers
        else:
            listener.close()
        monkeypatch.setenv("OLLAMA_HOST", f"127.0.0.1:{listener.getsockname()[1]}"
                           if kind == "silent" else f"127.0.0.1:{closed_port()}")
        t0 = time.monotonic()
        spec = SpinBotScriptOllama.INPUT_TYPES()["required"]["model"]
        elapsed = time.monotonic() - t0
    ollama_client.forget_cached_models()
    assert spec[0] == [DEFAULT_MODEL] and spec[1]["default"] == DEFAULT_MODEL
    assert elapsed < 2.0


def test_validate_inputs_accepts_models_missing_from_the_list():
    assert SpinBotScriptOllama.VALIDATE_INPUTS(model="mistral:7b") is True
    assert SpinBotScriptOllama.VALIDATE_INPUTS(model=" ") != True  # noqa: E712


@pytest.mark.parametrize("given, expected", [
    ("", "http://127.0.0.1:11434"),
    ("localhost", "http://localhost:11434"),
    (":8080", "http://127.0.0.1:8080"),
    ("10.0.0.2:9000/", "http://10.0.0.2:9000"),
    ("http://box.lan", "http://box.lan:80"),
    ("https://ollama.example.org/api-proxy/", "https://ollama.example.org:443/api-proxy"),
    ("[::1]:11434", "http://[::1]:11434"),
])
def test_host_normalisation(given, expected):
    assert normalize_host(given) == expected


@pytest.mark.parametrize("bad", ["ftp://host", "http://host:99999", "http://"])
def test_bad_host_is_a_clear_error(bad):
    with pytest.raises(ScriptError, match="Ollama host"):
        normalize_host(bad)


def test_empty_topic_is_refused_before_any_request(fake):
    with pytest.raises(ScriptError, match="topic is empty"):
        run(fake.url, topic="   ")
    assert fake.chats == []
