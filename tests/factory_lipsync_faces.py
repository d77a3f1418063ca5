"""Tiny insightface detector pack: ``models/<pack>/det_10g.onnx`` with SCRFD's signature.

insightface's model zoo tells models apart by their ONNX signature: a graph with 5 or more
outputs is a SCRFD detector; 9 outputs mean strides 8/16/32, two anchors per location and five
keypoints. The outputs come in the order scores(8,16,32), box distances(8,16,32),
keypoint distances(8,16,32), each flattened location-major, anchor-minor: ``[h*w*2, 1]``,
``[h*w*2, 4]`` and ``[h*w*2, 10]``; the input is ``input.1`` ``[1,3,?,?]`` (BGR normalised by
insightface). This graph keeps that interface with a few random convolutions, so
``FaceAnalysis(...).prepare(...)`` and ``.get(...)`` run the real loading and decoding code.
Biases and a ReLU on the distances make random weights give a few valid boxes per frame.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.factory import builder

STRIDES = (8, 16, 32)
ANCHORS = 2
WIDTH = 8


def tiny_scrfd_model(seed: int = 0):
    """The tiny SCRFD graph as an ``onnx.ModelProto``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []

    def conv(name: str, x: str, cin: int, cout: int, stride: int, bias: float = 0.0) -> str:
        w = (rng.standard_normal((cout, cin, 3, 3)) / np.sqrt(cin * 9)).astype(np.float32)
        b = (rng.standard_normal(cout) * 0.01 + bias).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{name}.weight"),
                      numpy_helper.from_array(b, f"{name}.bias")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name],
                                      kernel_shape=[3, 3], strides=[stride, stride],
                                      pads=[1, 1, 1, 1]))
        return name

    def op(kind: str, inputs: list[str], out: str, **attrs) -> str:
        nodes.append(helper.make_node(kind, inputs, [out], **attrs))
        return out

    x = "input.1"
    features: dict[int, str] = {}
    stride, channels = 1, 3
    while stride < max(STRIDES):
        stride *= 2
        x = op("Relu", [conv(f"backbone.s{stride}", x, channels, WIDTH, 2)], f"backbone.s{stride}.act")
        channels = WIDTH
        if stride in STRIDES:
            features[stride] = x

    for width in (1, 4, 10):
        inits.append(numpy_helper.from_array(np.array([-1, width], np.int64), f"shape{width}"))

    outputs: dict[str, list[str]] = {"score": [], "bbox": [], "kps": []}
    out_id = 400
    for head, per_anchor in (("score", 1), ("bbox", 4), ("kps", 10)):
        for s in STRIDES:
            name = f"head.{head}.s{s}"
            # Only the coarsest level scores over the threshold, with boxes a few strides wide:
            # a handful of detections after NMS, like a real photo, not thousands.
            bias = (0.5 if s == STRIDES[-1] else -6.0) if head == "score" else 2.0
            y = conv(name, features[s], WIDTH, ANCHORS * per_anchor, 1, bias=bias)
            y = op("Sigmoid" if head == "score" else "Relu", [y], f"{name}.act")
            y = op("Transpose", [y], f"{name}.nhwc", perm=[0, 2, 3, 1])
            out_id += 1
            outputs[head].append(op("Reshape", [y, f"shape{per_anchor}"], str(out_id)))

    graph_outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [f"n{s}", width])
                     for head, width in (("score", 1), ("bbox", 4), ("kps", 10))
                     for name, s in zip(outputs[head], STRIDES)]
    graph = helper.make_graph(
        nodes, "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        graph_outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="spinbot-tests")
    model.ir_version = 8  # readable by older onnxruntime builds too
    onnx.checker.check_model(model)
    return model


def write_tiny_pack(pack_dir: Path, seed: int = 0) -> Path:
    import onnx

    pack_dir.mkdir(parents=True, exist_ok=True)
    path = pack_dir / "det_10g.onnx"
    onnx.save(tiny_scrfd_model(seed), str(path))
    return path


@builder("insightface")
def tiny_buffalo_l(folder: Path) -> list[Path]:
    return [write_tiny_pack(folder / "models" / "buffalo_l", seed=10)]
