"""Where the TensorRT Q/DQ pass puts low precision, on a small conv net quantized by the real ONNX Runtime quantizer:
under fp8 the image stem and the depthwise convolution stay float (TensorRT has no fast fp8 kernels for them), even
where the quantizer put Q/DQ on the activation they read, and the 1x1 convolutions are fp8; under int8 every
convolution (and the Relu after it) reads Q/DQ."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.calibration import Samples
from kiln.passes.explicit_qdq import quantize_for_tensorrt


def _conv_net(path) -> None:
    rng = np.random.default_rng(0)

    def weight(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name)

    nodes = [helper.make_node("Conv", ["x", "w_stem"], ["a"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["a_relu"], name="stem_relu"),
             helper.make_node("Conv", ["a_relu", "w_expand"], ["e"], name="expand"),
             helper.make_node("Relu", ["e"], ["e_relu"], name="expand_relu"),
             helper.make_node("Conv", ["e_relu", "w_dw"], ["b"], name="depthwise", group=16, pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["b"], ["b_relu"], name="depthwise_relu"),
             helper.make_node("Conv", ["b_relu", "w_pw"], ["y"], name="pointwise")]
    graph = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 16, 16])],
                              [weight("w_stem", 16, 3, 3, 3), weight("w_expand", 16, 16, 1, 1), weight("w_dw", 16, 1, 3, 3), weight("w_pw", 32, 16, 1, 1)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


def _reading_dequantized(path) -> set[str]:
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    return {n.name for n in model.graph.node if n.op_type != "QuantizeLinear"
            and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)}


@pytest.mark.parametrize("kind, quantized", [("fp8", {"expand", "expand_relu", "pointwise"}),
                                                  ("int8", {"stem", "stem_relu", "expand", "expand_relu", "depthwise",
                                                            "depthwise_relu", "pointwise"})])
def test_fp8_leaves_the_stem_and_depthwise_convs_float(tmp_path, kind, quantized):
    _conv_net(tmp_path / "net.onnx")
    rng = np.random.default_rng(1)
    samples = Samples(tuple({"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)),
                      "arrays", "random")
    details = quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "q.onnx", samples, kind)
    assert _reading_dequantized(tmp_path / "q.onnx") == quantized
    if kind == "fp8":
        assert details["fp8_without_fast_kernels"] == ["stem", "depthwise"]
        assert {"stem", "depthwise"} <= set(details["kept_fp32"])
    else:
        assert "fp8_without_fast_kernels" not in details

