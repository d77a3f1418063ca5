"""Workflow validator and runner that work without ComfyUI.

- `validate_api(workflow, defs)` / `validate_ui(workflow, defs)` check a workflow against node
  definitions: every node type known, required inputs present, link types agree, combo values valid,
  numbers within their bounds. Errors name the node (id, type, title) and the input.
- `run_api(workflow, classes)` executes an API-format workflow by calling the node classes in
  dependency order, the way ComfyUI's executor does (hidden PROMPT/EXTRA_PNGINFO included).

Node definitions (`defs`) map a class id to ``{"input": INPUT_TYPES(), "output": RETURN_TYPES,
"output_name": ...}``; `definitions(classes)` builds them from node classes, and `CORE_NODE_DEFS`
covers the few core ComfyUI nodes the pack's workflows use.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from typing import Any


class WorkflowError(ValueError):
    pass


# Core ComfyUI nodes used by the shipped workflows (signatures as ComfyUI declares them).
CORE_NODE_DEFS: dict[str, dict] = {
    "LoadImage": {"input": {"required": {"image": (["*"], {"image_upload": True})}},
                  "output": ("IMAGE", "MASK"), "upload_widgets": 1},
    "LoadAudio": {"input": {"required": {"audio": (["*"], {"audio_upload": True})}},
                  "output": ("AUDIO",), "upload_widgets": 2},
    "PreviewImage": {"input": {"required": {"images": ("IMAGE",)}}, "output": ()},
    "SaveAudio": {"input": {"required": {"audio": ("AUDIO",),
                                         "filename_prefix": ("STRING", {"default": "audio/ComfyUI"})}},
                  "output": ()},
    "PreviewAudio": {"input": {"required": {"audio": ("AUDIO",)}}, "output": ()},
}
UI_ONLY_NODES = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN"}


def definitions(classes: dict[str, type]) -> dict[str, dict]:
    defs = dict(CORE_NODE_DEFS)
    for name, cls in classes.items():
        defs[name] = {"input": cls.INPUT_TYPES(), "output": tuple(cls.RETURN_TYPES),
                      "output_name": tuple(getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES)}
    return defs


def _inputs(defn: dict) -> "OrderedDict[str, tuple[str, tuple, dict]]":
    """name -> (section, spec type, options), in declaration order (required, optional)."""
    out: OrderedDict[str, tuple[str, Any, dict]] = OrderedDict()
    for section in ("required", "optional"):
        for name, spec in (defn["input"].get(section) or {}).items():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            out[name] = (section, spec[0], options)
    return out


def has_seed_control(name: str, spec_type: Any, options: dict) -> bool:
    """Whether the frontend stores a "control after generate" value after this widget: it adds
    one after INT seeds unless the node says otherwise."""
    if "control_after_generate" in options:
        return bool(options["control_after_generate"])
    return spec_type == "INT" and name in ("seed", "noise_seed")


def _is_widget(spec_type: Any, options: dict) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(spec_type, (list, tuple)) or spec_type in WIDGET_TYPES


def _check_value(where: str, spec_type: Any, options: dict, value: Any) -> None:
    if isinstance(spec_type, (list, tuple)):
        # an upload combo (SpinBot Load Video) lists the input folder: any uploaded name goes
        if list(spec_type) != ["*"] and not options.get("video_upload") and value not in spec_type:
            shown = ", ".join(map(str, list(spec_type)[:8]))
            raise WorkflowError(f"{where}: {value!r} is not one of the choices ({shown})")
        return
    if spec_type == "INT" or spec_type == "FLOAT":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise WorkflowError(f"{where}: expected a number, got {value!r}")
        if spec_type == "INT" and float(value) != int(value):
            raise WorkflowError(f"{where}: expected an integer, got {value!r}")
        lo, hi = options.get("min"), options.get("max")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise WorkflowError(f"{where}: {value} is outside [{lo}, {hi}]")
    elif spec_type == "STRING" and not isinstance(value, str):
        raise WorkflowError(f"{where}: expected text, got {value!r}")
    elif spec_type == "BOOLEAN" and not isinstance(value, bool):
        raise WorkflowError(f"{where}: expected true/false, got {value!r}")


def _types_agree(out_type: str, in_type: Any) -> bool:
    if isinstance(in_type, (list, tuple)):  # a widget fed by a primitive/link of its own kind
        return out_type in ("COMBO", "*")
    wanted = set(str(in_type).split(","))
    return out_type == "*" or in_type == "*" or out_type in wanted


def validate_api(workflow: dict, defs: dict[str, dict]) -> None:
    """Raise WorkflowError naming the node and input of the first problem in an API workflow."""
    if not isinstance(workflow, dict) or not workflow:
        raise WorkflowError("an API workflow is a non-empty object of node id -> node")
    for node_id, node in workflow.items():
        ctype = node.get("class_type")
        title = (node.get("_meta") or {}).get("title", ctype)
        label = f"node {node_id} ({ctype}, '{title}')"
        if ctype not in defs:
            raise WorkflowError(f"{label}: unknown node type")
        specs = _inputs(defs[ctype])
        given = node.get("inputs") or {}
        for name in given:
            if name not in specs:
                raise WorkflowError(f"{label}: input '{name}' is not an input of {ctype}")
        for name, (section, spec_type, options) in specs.items():
            where = f"{label} input '{name}'"
            if name not in given:
                if section == "required":
                    raise WorkflowError(f"{where}: required input is missing")
                continue
            value = given[name]
            if _looks_like_link(value):
                src_id, slot = str(value[0]), value[1]
                if src_id not in workflow:
                    raise WorkflowError(f"{where}: linked to missing node {src_id}")
                src = workflow[src_id]
                outputs = defs[src["class_type"]]["output"]
                if not 0 <= slot < len(outputs):
                    raise WorkflowError(f"{where}: node {src_id} has no output {slot}")
                if not _types_agree(outputs[slot], spec_type):
                    raise WorkflowError(f"{where}: expects {spec_type}, but node {src_id} "
                                        f"({src['class_type']}) output {slot} is {outputs[slot]}")
            elif not _is_widget(spec_type, options):
                raise WorkflowError(f"{where}: {spec_type} must be connected to a node output")
            else:
                _check_value(where, spec_type, options, value)


def validate_ui(workflow: dict, defs: dict[str, dict]) -> None:
    """Raise WorkflowError for the first problem in a UI-format (drag-and-drop) workflow."""
    nodes = {n["id"]: n for n in workflow.get("nodes", [])}
    links = {}
    for link in workflow.get("links", []):
        link_id, src, src_slot, dst, dst_slot, ltype = link[:6]
        for end in (src, dst):
            if end not in nodes:
                raise WorkflowError(f"link {link_id} refers to missing node {end}")
        links[link_id] = (src, src_slot, dst, dst_slot, ltype)
    for node in nodes.values():
        ntype = node.get("type")
        if ntype in UI_ONLY_NODES:
            continue
        label = f"node {node['id']} ({ntype}, '{node.get('title', ntype)}')"
        if ntype not in defs:
            raise WorkflowError(f"{label}: unknown node type")
        specs = _inputs(defs[ntype])
        linked: set[str] = set()
        for inp in node.get("inputs") or []:
            name = inp.get("name")
            if name not in specs:
                raise WorkflowError(f"{label}: input '{name}' is not an input of {ntype}")
            link_id = inp.get("link")
            if link_id is None:
                continue
            if link_id not in links:
                raise WorkflowError(f"{label} input '{name}': link {link_id} does not exist")
            src, src_slot, dst, _dst_slot, ltype = links[link_id]
            src_node = nodes[src]
            outputs = defs.get(src_node["type"], {}).get("output", ())
            out_type = outputs[src_slot] if src_slot < len(outputs) else None
            if dst != node["id"] or out_type is None or not _types_agree(out_type, specs[name][1]):
                raise WorkflowError(f"{label} input '{name}': expects {specs[name][1]}, link "
                                    f"{link_id} brings {out_type} from node {src}")
            linked.add(name)
        for name, (section, spec_type, options) in specs.items():
            if section == "required" and not _is_widget(spec_type, options) and name not in linked:
                raise WorkflowError(f"{label} input '{name}': required input is not connected")
        values = list(node.get("widgets_values") or [])
        widget_names = [n for n, (_s, t, o) in specs.items() if _is_widget(t, o)]
        # the frontend stores its upload button's value after a video_upload combo's widgets
        extra_upload = defs[ntype].get("upload_widgets", 0) or sum(
            bool(o.get("video_upload")) for _s, _t, o in specs.values())
        pos = 0
        for name in widget_names:
            if pos >= len(values):
                raise WorkflowError(f"{label} widget '{name}': no value in widgets_values")
            section, spec_type, options = specs[name]
            if name not in linked:
                _check_value(f"{label} widget '{name}'", spec_type, options, values[pos])
            pos += 1
            if has_seed_control(name, spec_type, options):
                pos += 1  # the frontend stores "fixed/increment/randomize" after a seed
        if len(values) > pos + extra_upload:
            raise WorkflowError(f"{label}: {len(values)} widget values for {pos} widgets")


def ui_to_api_shape(workflow: dict, defs: dict[str, dict]) -> dict:
    """The API form of a UI workflow (node types, widget values by name, links) for cross-checks."""
    nodes = {n["id"]: n for n in workflow["nodes"] if n["type"] not in UI_ONLY_NODES}
    links = {l[0]: l for l in workflow.get("links", [])}
    api: dict[str, dict] = {}
    for nid, node in nodes.items():
        specs = _inputs(defs[node["type"]])
        values = list(node.get("widgets_values") or [])
        inputs: dict[str, Any] = {}
        pos = 0
        for name, (_s, t, o) in specs.items():
            if _is_widget(t, o):
                inputs[name] = values[pos]
                pos += 2 if has_seed_control(name, t, o) else 1
        for inp in node.get("inputs") or []:
            if inp.get("link") is not None:
                link = links[inp["link"]]
                inputs[inp["name"]] = [str(link[1]), link[2]]
        api[str(nid)] = {"class_type": node["type"], "inputs": inputs}
    return api


def run_api(workflow: dict, classes: dict[str, type], extra_pnginfo: dict | None = None) -> dict:
    """Execute an API workflow in dependency order; returns node id -> raw node return value."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(nid: str) -> None:
        if state.get(nid) == 2:
            return
        if state.get(nid) == 1:
            raise WorkflowError(f"node {nid}: the graph has a cycle")
        state[nid] = 1
        for value in workflow[nid]["inputs"].values():
            if _is_link(value, workflow):
                visit(str(value[0]))
        state[nid] = 2
        order.append(nid)

    for nid in workflow:
        visit(nid)
    outputs: dict[str, tuple] = {}
    returned: dict[str, Any] = {}
    for nid in order:
        node = workflow[nid]
        cls = classes[node["class_type"]]
        kwargs = {}
        for name, value in node["inputs"].items():
            kwargs[name] = outputs[str(value[0])][value[1]] if _is_link(value, workflow) else value
        hidden = (cls.INPUT_TYPES().get("hidden") or {})
        for name, kind in hidden.items():
            if kind == "PROMPT":
                kwargs[name] = workflow
            elif kind == "EXTRA_PNGINFO":
                kwargs[name] = extra_pnginfo or {}
        result = getattr(cls(), cls.FUNCTION)(**kwargs)
        returned[nid] = result
        outputs[nid] = tuple(result["result"]) if isinstance(result, dict) else tuple(result)
    return returned


def _looks_like_link(value: Any) -> bool:
    """API links are ``[source_node_id, output_index]``; no widget value has that shape."""
    return (isinstance(value, list) and len(value) == 2 and isinstance(value[0], (str, int))
            and isinstance(value[1], int) and not isinstance(value[1], bool))


def _is_link(value: Any, workflow: dict) -> bool:
    return _looks_like_link(value) and str(value[0]) in workflow


def load_json(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
