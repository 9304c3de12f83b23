"""The weight-only quantizer on a tied embedding: the model builder writes the embedding table as a Transpose
of the LM head's weight, which would keep an fp32 copy beside the quantized head."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kiln.llm.compile import compile_onnxruntime, gather_int8, weight_bytes


def tied_graph(path, vocab=512, hidden=128):
    """ids -> Gather(Transpose(W)) -> MatMul(W) -> logits, W of shape [hidden, vocab] (as the builder's LM head)."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((hidden, vocab)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["lm_head.weight"], ["table"], perm=[1, 0], name="/embed/Transpose"),
             helper.make_node("Gather", ["table", "input_ids"], ["embedded"], name="/embed/Gather"),
             helper.make_node("MatMul", ["embedded", "lm_head.weight"], ["logits"], name="/lm_head/MatMul")]
    graph = helper.make_graph(nodes, "tied", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "s"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, "s", vocab])],
                              [numpy_helper.from_array(weight, "lm_head.weight")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    return weight


def test_tied_embedding_is_untied_and_both_copies_quantized(tmp_path):
    weight = tied_graph(tmp_path / "fp32" / "model.onnx")
    details = compile_onnxruntime(tmp_path / "fp32" / "model.onnx", tmp_path / "q", "int4-weights", {})
    graph = onnx.load(str(tmp_path / "q" / "model.onnx"), load_external_data=False)
    ops = [n.op_type for n in graph.graph.node]
    assert "Transpose" not in ops and ops.count("GatherBlockQuantized") == 1 and ops.count("MatMulNBits") == 1
    assert details["embeddings"] == "GatherBlockQuantized 8-bit" and details["lm_head"] == "MatMulNBits 8-bit"
    # int8 table + int8 head + scales, against 2 fp32 copies' worth had the Transpose stayed
    assert weight_bytes(tmp_path / "q" / "model.onnx") < 0.6 * weight.nbytes
    ids = np.array([[3, 77, 500, 12]], dtype=np.int64)
    want = weight.T[ids[0]] @ weight
    got = ort.InferenceSession(str(tmp_path / "q" / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids})[0][0]
    cosine = np.sum(want * got, axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() > 0.98, cosine


def test_the_int8_embedding_reads_each_row_within_half_a_step_of_fp32():
    """gather_int8 writes GatherBlockQuantized uint8 by hand (ONNX Runtime's quantizer writes a Gather in 4 bits only):
    ONNX Runtime must read back every row within half a quantization step; a table of integers is left alone."""
    rng = np.random.default_rng(1)
    table = (rng.standard_normal((300, 96)) * np.linspace(0.01, 3, 96)).astype(np.float32)
    table[7] = 0.0  # an all-zero row has no scale to divide by
    other = rng.integers(-5, 5, (10, 96)).astype(np.int64)
    nodes = [helper.make_node("Gather", ["table", "input_ids"], ["embedded"], name="embed"),
             helper.make_node("Gather", ["other", "picked"], ["side"], name="side_gather"),
             helper.make_node("Cast", ["side"], ["side_float"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Add", ["embedded", "side_float"], ["out"], name="add")]
    graph = helper.make_graph(nodes, "emb", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, "s"])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, "s", 96])],
                              [numpy_helper.from_array(table, "table"), numpy_helper.from_array(other, "other"),
                               numpy_helper.from_array(np.array([[0]], dtype=np.int64), "picked")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    assert gather_int8(model) == ["embed"]
    assert [n.op_type for n in model.graph.node] == ["GatherBlockQuantized", "Gather", "Cast", "Add"]
    ids = np.arange(300, dtype=np.int64)[None]
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids})[0][0] - other[0]
    steps = np.repeat(np.abs(table.reshape(300, 3, 32)).max(-1) / 127, 32, axis=1)
    assert np.all(np.abs(got - table) <= steps / 2 + 1e-5)
    assert np.all(got[7] == 0.0)
