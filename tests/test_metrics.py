"""Run metrics (nodes/metrics.py): stage time and peak memory, failures, the run report in the MP4,
the Prometheus series and the shipped Grafana dashboard."""
from __future__ import annotations

import gc
import inspect
import json
import mmap
import os
import re
import time

import numpy as np
import pytest
import torch

import spinbot
from spinbot.nodes import metrics, model_cache, runtime
from tests._pack import ROOT
from tests.mp4probe import probe

prom_parser = pytest.importorskip("prometheus_client.parser")

MIB = 2 ** 20
NODES = spinbot.NODE_CLASS_MAPPINGS  # loading the mappings instruments every node class
MODES = ["sampler"] + (["hwm"] if metrics._read_hwm() is not None and metrics._reset_hwm() else [])


@pytest.fixture(params=MODES)
def mode(request):
    previous = metrics.peak_ram_mode()
    metrics.set_peak_ram_mode(request.param)
    yield request.param
    metrics.set_peak_ram_mode(previous)


def scrape() -> dict:
    """{(sample name, frozenset(labels)): value} of the pack's registry, via the text parser."""
    body, content_type = metrics.prometheus_text()
    assert content_type.startswith("text/plain")
    samples = {}
    for family in prom_parser.text_string_to_metric_families(body.decode()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


class _touch:
    """``nbytes`` of fresh resident memory from an anonymous ``mmap`` of its own, unmapped on
    ``del``. malloc could hand back heap pages an earlier test freed (resident already, so RSS
    would not grow): in CI a 40 MiB numpy block did, after ray/torch had changed malloc's mmap
    threshold, and the stage saw +4 KiB."""

    def __init__(self, nbytes: int):
        self._map = mmap.mmap(-1, nbytes)
        view = np.frombuffer(self._map, dtype=np.uint8)
        view.fill(1)  # pages become resident only when written
        del view  # a live export would keep the map from closing

    def __del__(self):
        self._map.close()


def test_stage_time_and_peak_ram_of_a_200_mib_allocation(mode):
    gc.collect()
    metrics.new_run()
    with metrics.stage("alloc") as rec:
        block = _touch(200 * MIB)
        time.sleep(0.15)  # several sampler periods
        del block
    assert rec.seconds >= 0.15 and rec.error is None
    # freed before the stage ended, still its peak. Slack: below, up to 1 MiB of the block may
    # reuse heap pages already resident at the start; above, interpreter/allocator noise.
    assert 199 * MIB <= rec.peak_ram_delta <= 240 * MIB, (mode, rec.peak_ram_delta / MIB)
    assert metrics.run_report().stages[-1] is rec
    assert "peak RAM +2" in rec.line() and rec.line().startswith("stage: ")


def test_peak_is_the_stage_s_not_the_process_lifetime_peak(mode):
    """ru_maxrss would report the 300 MiB spike from before the stage."""
    block = _touch(300 * MIB)
    del block
    gc.collect()
    with metrics.stage("small") as rec:
        small = _touch(40 * MIB)
        time.sleep(0.06)
        del small
    assert 39 * MIB <= rec.peak_ram_delta < 100 * MIB, rec.peak_ram_delta / MIB


def test_nested_stages_keep_their_own_peaks(mode):
    with metrics.stage("outer") as outer:
        with metrics.stage("inner") as inner:
            block = _touch(120 * MIB)
            time.sleep(0.06)
            del block
        time.sleep(0.03)
    assert inner.peak_ram_delta >= 119 * MIB
    assert outer.peak_ram_delta >= 119 * MIB  # the inner reset must not lose the outer's peak
    assert outer.seconds > inner.seconds


def test_failing_stage_counts_its_error_type_and_reraises():
    before = scrape()
    err = ValueError("boom")
    with pytest.raises(ValueError) as raised:
        with metrics.stage("fails") as rec:
            raise err
    assert raised.value is err
    assert rec.error == "ValueError" and rec.seconds is not None
    assert "failed: ValueError" in rec.line()
    after = scrape()
    assert value(after, "spinbot_stage_failures_total", stage="fails", error="ValueError") == \
        value(before, "spinbot_stage_failures_total", stage="fails", error="ValueError") + 1
    # failed stages are not timed as finished ones
    assert value(after, "spinbot_stage_seconds_count", stage="fails") == \
        value(before, "spinbot_stage_seconds_count", stage="fails")


def test_every_node_is_wrapped_with_its_signature_kept():
    for name, cls in NODES.items():
        func = getattr(cls, cls.FUNCTION)
        assert func._spinbot_stage == name
        original = inspect.unwrap(func)
        assert original is not func
        assert inspect.signature(func) == inspect.signature(original)
        assert func.__name__ == cls.FUNCTION
    before = getattr(NODES["SpinBotVideoCombine"], "combine")
    metrics.instrument_node(NODES["SpinBotVideoCombine"], "SpinBotVideoCombine")
    assert getattr(NODES["SpinBotVideoCombine"], "combine") is before  # no double wrapping


def test_node_stage_records_frames_and_failures():
    run = metrics.new_run()
    before = scrape()
    images = torch.rand(7, 16, 16, 3)
    (video,) = NODES["SpinBotImagesToVideo"]().convert(images=images, fps=10.0)
    assert video.frame_count == 7
    with pytest.raises(Exception) as raised:
        NODES["SpinBotVideoToImages"]().convert(video=video, start_frame=50, max_frames=0)
    after = scrape()
    assert [(s.name, s.frames, s.error) for s in run.stages] == [
        ("SpinBotImagesToVideo", 7, None),
        ("SpinBotVideoToImages", 0, type(raised.value).__name__)]
    assert value(after, "spinbot_frames_rendered_total", stage="SpinBotImagesToVideo") == \
        value(before, "spinbot_frames_rendered_total", stage="SpinBotImagesToVideo") + 7
    assert value(after, "spinbot_stage_seconds_count", stage="SpinBotImagesToVideo") == \
        value(before, "spinbot_stage_seconds_count", stage="SpinBotImagesToVideo") + 1
    assert value(after, "spinbot_stage_failures_total", stage="SpinBotVideoToImages",
                 error="MediaError") == value(before, "spinbot_stage_failures_total",
                                              stage="SpinBotVideoToImages", error="MediaError") + 1


def test_video_combine_embeds_the_run_report(spinbot_dirs):
    run = metrics.new_run()
    images = torch.rand(12, 32, 32, 3)
    audio = {"waveform": torch.zeros(1, 1, 12000), "sample_rate": 24000}
    (video,) = NODES["SpinBotImagesToVideo"]().convert(images=images, fps=24.0, audio=audio)
    out = NODES["SpinBotVideoCombine"]().combine(
        fps=24.0, filename_prefix="SpinBot/metrics", crf=23, preset="ultrafast",
        audio_bitrate="128k", length_policy="pad video with last frame", normalize_loudness=False,
        loudness_lufs=-14.0, video=video)
    path, report = out["result"]
    p = probe(path)
    assert p.video_frames == 12
    embedded = json.loads(p.metadata["spinbot_run"])
    assert embedded["run"] == run.run_id
    stages = embedded["stages"]
    assert [s["name"] for s in stages] == ["SpinBotImagesToVideo", "SpinBotVideoCombine"]
    first, combine = stages
    assert first["status"] == "done" and first["frames"] == 12 and first["seconds"] > 0
    assert first["peak_ram_bytes"] > 0 and first["peak_vram_bytes"] == 0  # no CUDA here
    assert combine["status"] == "running" and combine["seconds"] is None
    # the report: encode summary, the run's stages, then this stage's own finished line
    lines = report.splitlines()
    assert lines[0].startswith(os.path.basename(path)) and "12 frames" in lines[0]
    assert f"run {run.run_id}:" in report
    assert re.search(r"\n  SpinBotImagesToVideo: \d+\.\d\d s, .*, 12 frames\n"
                     r"  SpinBotVideoCombine: running\n", report), report
    assert re.fullmatch(r"stage: \d+\.\d\d s, peak RAM \+\d+ MiB \(\d+ MiB RSS\), "
                        r"peak VRAM 0 MiB, 12 frames", lines[-1]), lines[-1]
    assert run.stages[-1].frames == 12 and run.stages[-1].seconds > 0


def test_report_outputs_and_ui_text_get_the_stage_line():
    class Reporter:  # the report conventions of the pack's nodes, on a node of this test's own
        FUNCTION = "go"
        RETURN_TYPES = ("STRING", "STRING", "IMAGE")
        RETURN_NAMES = ("text", "report", "images")

        def go(self, n: int):
            return {"ui": {"text": ["saved"]},
                    "result": ("keep", "did it", torch.zeros(n, 4, 4, 3))}

    metrics.instrument_node(Reporter, "Reporter")
    run = metrics.new_run()
    out = Reporter().go(n=3)
    text, report, images = out["result"]
    line = run.stages[-1].line()
    assert text == "keep" and report == f"did it\n{line}" and images.shape[0] == 3
    assert out["ui"]["text"] == ["saved", line]
    assert run.stages[-1].frames == 3


def test_model_loads_are_counted_by_kind():
    before = scrape()
    key = ("metrics-test", id(object()))
    model_cache.put_model("metrics_test_kind", key, torch.nn.Linear(2, 2), name="tiny",
                          modules=lambda m: [m])
    try:
        after = scrape()
        assert value(after, "spinbot_model_loads_total", kind="metrics_test_kind") == \
            value(before, "spinbot_model_loads_total", kind="metrics_test_kind") + 1
    finally:
        model_cache.evict_models(key=key)


def test_queue_time_stamp_keeps_the_prompt_s_extra_data():
    """The on_prompt handler only adds its key (ComfyUI passes extra_data to the queue item)."""
    t0 = time.time()
    data = runtime._stamp_queue_time({"prompt": {}, "extra_data": {"extra_pnginfo": {"a": 1}}})
    extra = data["extra_data"]
    assert extra["extra_pnginfo"] == {"a": 1} and t0 <= extra[runtime.QUEUED_AT_KEY] <= time.time()
    assert runtime.QUEUED_AT_KEY in runtime._stamp_queue_time({"prompt": {}})["extra_data"]
    again = runtime._stamp_queue_time({"extra_data": {runtime.QUEUED_AT_KEY: 5.0}})
    assert again["extra_data"][runtime.QUEUED_AT_KEY] >= t0  # extra_data re-posted from history
    assert runtime.prompt_queued_at("any") is None and runtime.execution_context() == (None, None)


def test_prometheus_text_names_only_exported_series():
    with metrics.stage("scrape_check"):
        pass
    metrics.model_loaded("scrape_check")
    names = {name for name, _labels in scrape()}
    assert names <= set(metrics.EXPORTED_SERIES) | {
        n.replace("_total", "_created") for n in metrics.EXPORTED_SERIES} | {
        n.replace("_bucket", "_created") for n in metrics.EXPORTED_SERIES}
    assert {"spinbot_stage_seconds_count", "spinbot_model_loads_total",
            "spinbot_stage_peak_ram_bytes"} <= names


# --------------------------------------------------------------------------- Grafana dashboard

DASHBOARD = os.path.join(ROOT, "nodes", "data", "grafana", "spinbot-dashboard.json")
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
                "unless", "offset", "le"}


def promql_metrics(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names in matchers/groupings, strings or durations."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        word = m.group(0)
        following = expr[m.end():].lstrip()[:1]
        if following == "(" or word in PROMQL_WORDS:
            continue
        if m.start() > 0 and (expr[m.start() - 1].isdigit() or expr[m.start() - 1] == "."):
            continue  # 0.95, 5m
        names.add(word)
    return names


def test_promql_parser_of_this_test():
    assert promql_metrics('histogram_quantile(0.95, sum by (le, stage) (rate('
                          'spinbot_stage_seconds_bucket{stage=~"$stage"}[5m])))') == \
        {"spinbot_stage_seconds_bucket"}
    assert promql_metrics("sum(increase(a_total[1h])) / ignoring(x) b") == {"a_total", "b"}


def test_grafana_dashboard_uses_only_exported_series():
    with open(DASHBOARD, encoding="utf-8") as f:
        board = json.load(f)
    assert board["__inputs"][0]["name"] == "DS_PROMETHEUS"
    assert board["__inputs"][0]["pluginId"] == "prometheus"
    assert board["title"] and board["schemaVersion"] >= 30 and board["uid"]
    panels = [p for p in board["panels"] if p.get("type") != "row"]
    used = set()
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = promql_metrics(target["expr"])
            assert names, (panel["title"], target["expr"])
            unknown = names - set(metrics.EXPORTED_SERIES)
            assert not unknown, (panel["title"], unknown)
            used |= names
    families = {re.sub(r"_(bucket|sum|count)$", "", n) for n in metrics.EXPORTED_SERIES}
    assert families == {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}  # all shown
    for var in board["templating"]["list"]:
        for metric in re.findall(r"label_values\((\w+)", json.dumps(var["query"])):
            assert metric in metrics.EXPORTED_SERIES, metric
    titles = " ".join(p["title"].lower() for p in panels)
    for topic in ("stage duration", "frames per second", "failures", "model loads", "queue wait"):
        assert topic in titles, topic
