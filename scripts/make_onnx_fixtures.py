#!/usr/bin/env python3
"""Builds the ONNX test fixtures from the DLRM weights `recsys fixtures` writes.

    cargo run --release -p recsys-cli -- fixtures --out tests/fixtures
    target/ort-venv/bin/python scripts/make_onnx_fixtures.py tests/fixtures

Needs numpy and onnx (pip install onnx numpy). Writes:
- dlrm_ranker.onnx: the reference DLRM (same weights as
  dlrm_ranker.safetensors), inputs dense float32 [n, 8] and sparse int64
  [n, 8], output score [n, 1] (sigmoid);
- query_tower.onnx: the query tower (same weights as
  query_tower.safetensors), output vector [n, 16];
- nan_ranker.onnx: score = sqrt(dense[:, 0]), NaN for negative inputs
  (tests that NaN scores are errors);
- classifier.onnx: shaped like an XGBoost / scikit-learn classifier export:
  one float input named "input" [n, 3], outputs "label" int64 [n] and
  "probabilities" float [n, 2] = softmax(input @ W.T + b) with the W and b
  below (tests binding by type and two-class outputs).
The graphs follow the native DLRM exactly (src/rank/dlrm.rs): bottom MLP with
ReLU after every layer, interaction vectors [bottom, emb.0, ...], pairs (i, j)
with j < i in row-major order, top MLP with ReLU between layers.
"""
import json
import struct
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def read_safetensors(path):
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    data = raw[8 + n :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", (name, info["dtype"])
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(info["shape"])
    return out


def count(weights, prefix):
    n = 0
    while f"{prefix}.{n}.weight" in weights:
        n += 1
    return n


def dlrm_graph(weights, name, dense, sparse, sigmoid, output):
    nodes, inits = [], []

    def const(nm, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def mlp(x, prefix, relu_last):
        layers = count(weights, prefix)
        for j in range(layers):
            w = const(f"{prefix}.{j}.weight", weights[f"{prefix}.{j}.weight"])
            b = const(f"{prefix}.{j}.bias", weights[f"{prefix}.{j}.bias"])
            y = f"{prefix}.{j}.out"
            nodes.append(helper.make_node("Gemm", [x, w, b], [y], transB=1))
            x = y
            if j + 1 < layers or relu_last:
                nodes.append(helper.make_node("Relu", [x], [x + ".relu"]))
                x = x + ".relu"
        return x

    inputs, vectors = [], []
    bottom = None
    if dense:
        inputs.append(helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["n", dense]))
        bottom = mlp("dense", "bottom", True)
        vectors.append(bottom)
    if sparse:
        inputs.append(helper.make_tensor_value_info("sparse", TensorProto.INT64, ["n", sparse]))
    for i in range(sparse):
        col = const(f"col.{i}", np.array(i, dtype=np.int64))
        table = const(f"emb.{i}", weights[f"emb.{i}"])
        nodes.append(helper.make_node("Gather", ["sparse", col], [f"ids.{i}"], axis=1))
        nodes.append(helper.make_node("Gather", [table, f"ids.{i}"], [f"vec.{i}"], axis=0))
        vectors.append(f"vec.{i}")
    v = len(vectors)
    axes = const("axis1", np.array([1], dtype=np.int64))
    for k, vec in enumerate(vectors):
        nodes.append(helper.make_node("Unsqueeze", [vec, axes], [f"u.{k}"]))
    nodes.append(helper.make_node("Concat", [f"u.{k}" for k in range(v)], ["T"], axis=1))
    nodes.append(helper.make_node("Transpose", ["T"], ["Tt"], perm=[0, 2, 1]))
    nodes.append(helper.make_node("MatMul", ["T", "Tt"], ["Z"]))
    shape = const("zshape", np.array([-1, v * v], dtype=np.int64))
    nodes.append(helper.make_node("Reshape", ["Z", shape], ["Zflat"]))
    pairs = [i * v + j for i in range(1, v) for j in range(i)]
    pidx = const("pairs", np.array(pairs, dtype=np.int64))
    nodes.append(helper.make_node("Gather", ["Zflat", pidx], ["Zp"], axis=1))
    top_in = ["Zp"] if bottom is None else [bottom, "Zp"]
    nodes.append(helper.make_node("Concat", top_in, ["top_in"], axis=1))
    x = mlp("top_in", "top", False)
    if sigmoid:
        nodes.append(helper.make_node("Sigmoid", [x], [output]))
    else:
        nodes.append(helper.make_node("Identity", [x], [output]))
    width = weights[f"top.{count(weights, 'top') - 1}.weight"].shape[0]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["n", width])]
    graph = helper.make_graph(nodes, name, inputs, outputs, inits)
    return finish(graph)


def finish(graph):
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="redis-recsys fixtures")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def nan_ranker():
    nodes = [
        helper.make_node("Sqrt", ["dense"], ["score"]),
    ]
    graph = helper.make_graph(
        nodes,
        "nan_ranker",
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["n", 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["n", 1])],
    )
    return finish(graph)


CLASSIFIER_W = [[0.5, -1.0, 2.0], [-0.5, 1.0, -2.0]]
CLASSIFIER_B = [0.1, -0.1]


def classifier():
    w = numpy_helper.from_array(np.array(CLASSIFIER_W, dtype=np.float32), "W")
    b = numpy_helper.from_array(np.array(CLASSIFIER_B, dtype=np.float32), "B")
    nodes = [
        helper.make_node("Gemm", ["input", "W", "B"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 3])],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["n"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["n", 2]),
        ],
        [w, b],
    )
    return finish(graph)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
    ranker = read_safetensors(out / "dlrm_ranker.safetensors")
    onnx.save(dlrm_graph(ranker, "dlrm_ranker", 8, 8, True, "score"), out / "dlrm_ranker.onnx")
    tower = read_safetensors(out / "query_tower.safetensors")
    onnx.save(dlrm_graph(tower, "query_tower", 2, 1, False, "vector"), out / "query_tower.onnx")
    onnx.save(nan_ranker(), out / "nan_ranker.onnx")
    onnx.save(classifier(), out / "classifier.onnx")
    for f in ["dlrm_ranker.onnx", "query_tower.onnx", "nan_ranker.onnx", "classifier.onnx"]:
        print("wrote", out / f)


if __name__ == "__main__":
    main()
