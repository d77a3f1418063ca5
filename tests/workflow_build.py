"""One source for every shipped workflow: each graph is declared once here and written in both
ComfyUI formats, the UI format (drag and drop, groups, notes, placement) and the API format
(`POST /prompt`), so the two cannot drift.

    python -m tests.workflow_build --write     # regenerate workflows/*.json and workflows/api/*.json
    python -m tests.workflow_build --check     # exit 1 if a file on disk differs from its source

Widget values not given in a graph take the node's declared default, so a graph only names what it
changes. Model widgets are always given (manifest file names): their choices depend on the folder.

Model widgets carry the frontend's model metadata (``properties.models`` of the node: name, url,
directory, sha256), taken from the manifest, so ComfyUI's Missing Models dialog lists what to
download when a workflow is opened without them (see ``offered_models``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from tests._pack import ROOT, load_pack
from tests.workflow_tools import UI_ONLY_NODES, _inputs, _is_widget, definitions, has_seed_control

WORKFLOWS_DIR = os.path.join(ROOT, "workflows")
# Values the frontend stores after an upload widget (LoadImage: the upload type; LoadAudio: the
# upload button and the player).
UPLOAD_EXTRAS = {"LoadImage": ["image"], "LoadAudio": [None, None],
                 "SpinBotLoadVideo": ["image"]}  # video_upload: the same upload button
GROUP_COLORS = {"inputs": "#3f789e", "script": "#a1309b", "image": "#b58b2a", "voice": "#2a9d8f",
                "motion": "#8d5a97", "lipsync": "#c0392b", "upscale": "#5b7553", "output": "#88aa88"}


@dataclass
class Node:
    id: int
    type: str
    title: str
    pos: tuple[int, int]
    size: tuple[int, int] = (340, 200)
    widgets: dict[str, Any] = field(default_factory=dict)
    links: dict[str, tuple[int, int]] = field(default_factory=dict)  # input -> (source id, slot)


@dataclass
class Group:
    title: str
    bounding: tuple[int, int, int, int]
    color: str


@dataclass
class Graph:
    name: str
    nodes: list[Node]
    groups: list[Group] = field(default_factory=list)


def note(node_id: int, text: str, pos: tuple[int, int], size: tuple[int, int] = (420, 300)) -> Node:
    return Node(node_id, "Note", "Read me", pos, size, {"text": text})


# The suffixes ComfyUI lists in a model folder (``folder_paths.supported_pt_extensions``, read by
# GET /experiment/models/<folder>), which is what the frontend's Missing Models check compares a
# model's name with. Files with other suffixes (insightface's .onnx, Vocos' config.yaml, F5's
# vocab.txt) are never listed, so the dialog would call them missing even when installed: they
# are not offered there (the workflow's Note and the node's error name them instead).
LISTED_SUFFIXES = (".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft")


def manifest_files(value: Any) -> list:
    """The manifest files a model widget's value names: the file itself (``wav2lip_gan.pth``),
    every file of a model folder (``vocos-mel-24khz`` -> its config.yaml and pytorch_model.bin)
    or an insightface pack (``buffalo_l`` -> ``insightface/models/buffalo_l``)."""
    if not isinstance(value, str) or not value:
        return []
    load_pack()
    from spinbot.nodes import manifest

    return [m for m in manifest.models()
            if m.path == value or m.path.startswith(value + "/")
            or (m.folder == "insightface" and m.path == f"models/{value}")]


def offered_models(value: Any) -> tuple[list[dict], list[dict]]:
    """Frontend model metadata for one widget value: (entries for the node's
    ``properties.models``, entries for the workflow's top-level ``models`` list).

    The frontend keeps a node's entry only when its ``name`` equals one of the node's widget
    values, so a file named by the widget goes on the node; the files inside a named folder (the
    Vocos weights) go on the workflow, whose list it checks as is. Only files with a download
    url and a suffix ComfyUI lists are offered (see LISTED_SUFFIXES).
    """
    on_node, on_graph = [], []
    for m in manifest_files(value):
        if not m.url or not m.path.lower().endswith(LISTED_SUFFIXES):
            continue
        meta = {"name": m.path, "url": m.url, "directory": m.folder}
        if m.sha256:
            meta.update(hash=m.sha256, hash_type="sha256")
        (on_node if m.path == value else on_graph).append(meta)
    return on_node, on_graph


def _default(spec_type: Any, options: dict) -> Any:
    if "default" in options:
        return options["default"]
    if isinstance(spec_type, (list, tuple)):
        # A dropdown without a declared default lists files: its first entry depends on the
        # machine, so graphs must name the value.
        raise KeyError("a dropdown without a default needs an explicit value")
    return {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}[spec_type]


def _widget_values(node: Node, defs: dict) -> list[tuple[str, Any, bool]]:
    """(name, value, seed-like) for each widget of ``node``, in the node's declared order."""
    specs = _inputs(defs[node.type])
    unknown = set(node.widgets) - set(specs)
    if unknown:
        raise KeyError(f"{node.type} (node {node.id}) has no input {sorted(unknown)}")
    out = []
    for name, (_section, spec_type, options) in specs.items():
        if _is_widget(spec_type, options) and name not in node.links:
            try:
                value = node.widgets[name] if name in node.widgets else _default(spec_type, options)
            except KeyError as exc:
                raise KeyError(f"{node.type} (node {node.id}) widget '{name}': {exc}") from None
            out.append((name, value, has_seed_control(name, spec_type, options)))
        elif _is_widget(spec_type, options):
            out.append((name, node.widgets.get(name, _default(spec_type, options)),
                        has_seed_control(name, spec_type, options)))
    return out


def _order(graph: Graph) -> dict[int, int]:
    done: dict[int, int] = {}
    by_id = {n.id: n for n in graph.nodes}

    def visit(node: Node) -> None:
        if node.id in done:
            return
        for src, _slot in node.links.values():
            visit(by_id[src])
        done[node.id] = len(done)

    for node in graph.nodes:
        visit(node)
    return done


def to_api(graph: Graph, defs: dict) -> dict:
    api: dict[str, dict] = {}
    for node in graph.nodes:
        if node.type in UI_ONLY_NODES:
            continue
        inputs: dict[str, Any] = {name: value for name, value, _ in _widget_values(node, defs)
                                  if name not in node.links}
        for name, (src, slot) in node.links.items():
            inputs[name] = [str(src), slot]
        api[str(node.id)] = {"class_type": node.type, "inputs": inputs, "_meta": {"title": node.title}}
    return api


def to_ui(graph: Graph, defs: dict) -> dict:
    order = _order(graph)
    links: list[list] = []
    out_links: dict[tuple[int, int], list[int]] = {}
    in_links: dict[tuple[int, str], int] = {}
    by_id = {n.id: n for n in graph.nodes}
    for node in graph.nodes:
        specs = _inputs(defs[node.type]) if node.type not in UI_ONLY_NODES else {}
        # Link ids follow the consuming node's input order, so the file is stable.
        for name in [n for n in specs if n in node.links]:
            src, slot = node.links[name]
            out_type = defs[by_id[src].type]["output"][slot]
            link_id = len(links) + 1
            dst_slot = _socket_names(node, defs).index(name)
            links.append([link_id, src, slot, node.id, dst_slot, out_type])
            out_links.setdefault((src, slot), []).append(link_id)
            in_links[(node.id, name)] = link_id
    nodes = []
    graph_models: list[dict] = []
    for node in graph.nodes:
        entry: dict[str, Any] = {"id": node.id, "type": node.type, "title": node.title,
                                 "pos": list(node.pos), "size": list(node.size), "flags": {},
                                 "order": order[node.id], "mode": 0}
        if node.type in UI_ONLY_NODES:
            entry.update(inputs=[], outputs=[], properties={"text": ""},
                         widgets_values=[node.widgets["text"]], color="#432", bgcolor="#653")
            nodes.append(entry)
            continue
        defn = defs[node.type]
        specs = _inputs(defn)
        inputs = []
        for name in _socket_names(node, defs):
            section, spec_type, options = specs[name]
            item: dict[str, Any] = {"name": name, "type": spec_type if isinstance(spec_type, str) else "COMBO",
                                    "link": in_links.get((node.id, name))}
            if _is_widget(spec_type, options):
                item["widget"] = {"name": name}
            if section == "optional":
                item["shape"] = 7
            inputs.append(item)
        names = list(defn.get("output_name") or defn["output"])
        outputs = []
        for slot, out_type in enumerate(defn["output"]):
            targets = out_links.get((node.id, slot))
            item = {"name": names[slot], "type": out_type, "links": targets}
            if targets:
                item["slot_index"] = slot
            outputs.append(item)
        values: list[Any] = []
        properties: dict[str, Any] = {"Node name for S&R": node.type}
        for _name, value, seed_like in _widget_values(node, defs):
            values.append(value)
            if seed_like:
                values.append("fixed")
            on_node, on_graph = offered_models(value)
            if on_node:
                properties.setdefault("models", []).extend(on_node)
            graph_models += [m for m in on_graph if m not in graph_models]
        values += UPLOAD_EXTRAS.get(node.type, [])
        entry.update(inputs=inputs, outputs=outputs, properties=properties, widgets_values=values)
        nodes.append(entry)
    workflow = {"last_node_id": max(n.id for n in graph.nodes), "last_link_id": len(links),
                "nodes": nodes, "links": links,
                "groups": [{"title": g.title, "bounding": list(g.bounding), "color": g.color}
                           for g in graph.groups],
                "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}
    if graph_models:
        workflow["models"] = graph_models
    return workflow


def _socket_names(node: Node, defs: dict) -> list[str]:
    """Inputs shown as sockets: every non-widget input, plus widgets converted to inputs by a link."""
    specs = _inputs(defs[node.type])
    return [name for name, (_s, t, o) in specs.items() if not _is_widget(t, o) or name in node.links]


def _dump(data: dict) -> str:
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def rendered(graph: Graph, defs: dict) -> dict[str, str]:
    """Relative path -> file text for both formats of ``graph``."""
    return {f"{graph.name}.json": _dump(to_ui(graph, defs)),
            os.path.join("api", f"{graph.name}.json"): _dump(to_api(graph, defs))}


def all_graphs() -> list[Graph]:
    from tests.workflow_graphs import GRAPHS
    return [make() for make in GRAPHS]


def node_definitions() -> dict:
    return definitions(load_pack().NODE_CLASS_MAPPINGS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true")
    mode.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    defs = node_definitions()
    stale = []
    for graph in all_graphs():
        for rel, text in rendered(graph, defs).items():
            path = os.path.join(WORKFLOWS_DIR, rel)
            current = open(path, encoding="utf-8").read() if os.path.exists(path) else None
            if current != text:
                stale.append(rel)
                if args.write:
                    with open(path, "w", encoding="utf-8") as f:
                        f.write(text)
    for rel in stale:
        print(("wrote " if args.write else "stale ") + rel)
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
