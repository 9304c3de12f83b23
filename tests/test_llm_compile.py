"""The weight-only quantizer on a tied embedding: the model builder writes the embedding table as a Transpose
of the LM head's weight, which would keep an fp32 copy beside the quantized head."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from kiln.llm.compile import compile_onnxruntime, weight_bytes


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
    assert details["embeddings"] == "GatherBlockQuantized 4-bit" and details["lm_head"] == "MatMulNBits 8-bit"
    # int4 table + int8 head + scales, against 2 fp32 copies' worth had the Transpose stayed
    assert weight_bytes(tmp_path / "q" / "model.onnx") < 0.45 * weight.nbytes
    ids = np.array([[3, 77, 500, 12]], dtype=np.int64)
    want = weight.T[ids[0]] @ weight
    got = ort.InferenceSession(str(tmp_path / "q" / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input_ids": ids})[0][0]
    cosine = np.sum(want * got, axis=1) / np.linalg.norm(want, axis=1) / np.linalg.norm(got, axis=1)
    assert cosine.min() > 0.98, cosine
