"""Tiny insightface recognition model: ``models/buffalo_l/w600k_r50.onnx`` with ArcFace's signature.

buffalo_l ships its ArcFace recogniser (``w600k_r50.onnx``, an IResNet-50 trained on WebFace600K)
beside the SCRFD detector. insightface's model zoo routes an ONNX file by its signature
(``model_zoo.ModelRouter.get_model``): fewer than 5 outputs and a square input of at least 112
pixels, a multiple of 16, make an ``ArcFaceONNX`` (task ``recognition``). ArcFaceONNX reads its
normalisation from the first graph nodes: nodes named ``Sub``/``Mul`` mean an MXNet export fed raw
pixels; otherwise (the PyTorch export of w600k_r50) it feeds ``(pixel - 127.5) / 127.5``. The
release's interface is input ``input.1`` ``[None, 3, 112, 112]`` and one output ``683``
``[1, 512]``; this graph keeps both, named like a PyTorch export (``Conv_0``...), with a few
strided convolutions and a fully connected layer in place of the 50 residual blocks, so
``FaceAnalysis(allowed_modules=["detection", "recognition"])`` runs insightface's real alignment
(5-point ``norm_crop``) and embedding code. Embeddings of random weights are deterministic and
depend on the aligned crop's pixels and layout, nothing more: tests assert self-similarity 1,
symmetry and shapes, never that two photos show the same person.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from tests.factory import builder

SIZE = 112
EMBEDDING = 512
WIDTH = 8


def tiny_arcface_model(seed: int = 0):
    """The tiny ArcFace graph as an ``onnx.ModelProto``: ``input.1`` [N,3,112,112] -> ``683``
    [N,512] (not normalised, like the release: callers L2-normalise)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    counter = {"Conv": 0, "Relu": 0}

    def named(kind: str) -> str:
        name = f"{kind}_{counter.setdefault(kind, 0)}"
        counter[kind] += 1
        return name

    x, channels, size = "input.1", 3, SIZE
    # Four stride-2 convolutions: 112 -> 56 -> 28 -> 14 -> 7.
    for i in range(4):
        w = rng.standard_normal((WIDTH, channels, 3, 3)) / np.sqrt(channels * 9)
        w = w.astype(np.float32)
        b = (rng.standard_normal(WIDTH) * 0.05).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"),
                  numpy_helper.from_array(b, f"conv{i}.bias")]
        conv = named("Conv")
        nodes.append(helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [conv],
                                      name=conv, kernel_shape=[3, 3], strides=[2, 2],
                                      pads=[1, 1, 1, 1]))
        relu = named("Relu")
        nodes.append(helper.make_node("Relu", [conv], [relu], name=relu))
        x, channels, size = relu, WIDTH, size // 2
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="Flatten_0", axis=1))
    features = channels * size * size
    fc = (rng.standard_normal((EMBEDDING, features)) / np.sqrt(features)).astype(np.float32)
    inits += [numpy_helper.from_array(fc, "fc.weight"),
              numpy_helper.from_array(np.zeros(EMBEDDING, np.float32), "fc.bias")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["683"],
                                  name="Gemm_0", transB=1))
    graph = helper.make_graph(
        nodes, "tiny_arcface",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["None", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, EMBEDDING])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)],
                              producer_name="spinbot-tests")
    model.ir_version = 8  # readable by older onnxruntime builds too
    onnx.checker.check_model(model)
    return model


def write_tiny_recognizer(pack_dir: Path, seed: int = 0) -> Path:
    """Write ``w600k_r50.onnx`` into an insightface pack folder; returns its path."""
    import onnx

    pack_dir.mkdir(parents=True, exist_ok=True)
    path = pack_dir / "w600k_r50.onnx"
    onnx.save(tiny_arcface_model(seed), str(path))
    return path


@builder("insightface")
def tiny_buffalo_l_recognition(folder: Path) -> list[Path]:
    return [write_tiny_recognizer(folder / "models" / "buffalo_l", seed=60)]
