"""FLOPs and bytes per node (kiln.bench.flops) against hand counts on tiny hand-built graphs and tensors."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from kiln.bench.flops import NodeCost, TensorInfo, dtype_name, graph_costs, node_cost, openvino_layer_cost

F32 = TensorProto.FLOAT


def f32(*shape: int, constant: bool = False) -> TensorInfo:
    return TensorInfo(shape, "float32", constant)


def model(nodes, inputs, outputs, initializers=(), value_info=(), opset: int = 17) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers), value_info=list(value_info))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def weight(name: str, *shape: int, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.zeros(shape, dtype=dtype), name)


def only_cost(m: onnx.ModelProto, input_shapes: dict) -> NodeCost:
    costs = graph_costs(m, input_shapes)
    assert len(costs) == 1
    return costs[0][2]


def test_matmul_flops_bytes_and_intensity_match_the_hand_count():
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")],
              [helper.make_tensor_value_info("x", F32, [1, 128, 384])],
              [helper.make_tensor_value_info("y", F32, None)], [weight("w", 384, 1536)])
    [(name, op, cost)] = graph_costs(m, {})
    flops, nbytes = 2 * 128 * 384 * 1536, (128 * 384 + 384 * 1536 + 128 * 1536) * 4
    assert (name, op, cost) == ("mm", "MatMul", NodeCost(flops, nbytes, "matmul", "float32"))
    assert cost.intensity == flops / nbytes


def test_gemm_with_trans_b_and_bias_takes_k_from_a_and_adds_the_bias():
    cost = node_cost("Gemm", [f32(8, 64), f32(32, 64, constant=True), f32(32, constant=True)], [f32(8, 32)],
                     {"transB": 1})
    assert cost == NodeCost(2 * 8 * 32 * 64 + 8 * 32, (8 * 64 + 32 * 64 + 32 + 8 * 32) * 4, "matmul", "float32")


def test_conv_3x3_with_bias_counts_cin_times_kernel_per_output_plus_bias():
    m = model([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])],
              [helper.make_tensor_value_info("x", F32, ["n", 3, 32, 32])],
              [helper.make_tensor_value_info("y", F32, None)], [weight("w", 16, 3, 3, 3), weight("b", 16)])
    out = 16 * 32 * 32
    assert only_cost(m, {"x": (1, 3, 32, 32)}) == NodeCost(2 * out * 27 + out, (3 * 32 * 32 + 16 * 27 + 16 + out) * 4,
                                                           "conv", "float32")


def test_depthwise_conv_counts_one_input_channel_per_output():
    m = model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], group=32)],
              [helper.make_tensor_value_info("x", F32, [1, 32, 16, 16])],
              [helper.make_tensor_value_info("y", F32, None)], [weight("w", 32, 1, 3, 3)])
    out = 32 * 16 * 16
    assert only_cost(m, {}) == NodeCost(2 * out * 9, (out + 32 * 9 + out) * 4, "conv", "float32")


def test_pointwise_conv_is_a_matmul_over_channels():
    cost = node_cost("Conv", [f32(1, 32, 16, 16), f32(64, 32, 1, 1, constant=True)], [f32(1, 64, 16, 16)])
    assert cost == NodeCost(2 * 64 * 256 * 32, (32 * 256 + 64 * 32 + 64 * 256) * 4, "conv", "float32")


def test_conv_transpose_counts_per_input_element():
    # W is [Cin, Cout/group, k, k]: each of the 8*16*16 input elements meets 4*3*3 weights.
    cost = node_cost("ConvTranspose", [f32(1, 8, 16, 16), f32(8, 4, 3, 3)], [f32(1, 4, 18, 18)])
    assert cost.flops == 2 * (8 * 16 * 16) * (4 * 9)
    assert cost.kind == "conv"


def test_add_with_broadcasting_counts_output_elements_and_both_inputs_as_read():
    m = model([helper.make_node("Add", ["x", "b"], ["y"])], [helper.make_tensor_value_info("x", F32, [4, 128, 384])],
              [helper.make_tensor_value_info("y", F32, None)], [weight("b", 384)])
    out = 4 * 128 * 384
    assert only_cost(m, {}) == NodeCost(out, (out + 384 + out) * 4, "elementwise", "float32")


def test_transcendental_elementwise_ops_cost_more_per_element():
    x = [f32(10, 10)]
    assert [node_cost(op, x, x).flops for op in ("Relu", "Sigmoid", "Erf", "Gelu", "FastGelu")] == [100, 400, 400,
                                                                                                   800, 800]


def test_resize_counts_interpolation_only_in_linear_or_cubic_mode_given_as_str_or_raw_bytes():
    x, y = [f32(1, 3, 8, 8)], [f32(1, 3, 16, 16)]
    assert [node_cost("Resize", x, y, attrs).flops for attrs in ({}, {"mode": "linear"}, {"mode": b"cubic"})] == [
        0, 4 * 768, 4 * 768]


def test_softmax_is_five_flops_per_element():
    n = 2 * 12 * 128 * 128
    assert node_cost("Softmax", [f32(2, 12, 128, 128)], [f32(2, 12, 128, 128)], {"axis": -1}) == NodeCost(
        5 * n, 2 * n * 4, "softmax", "float32")


def test_layer_normalization_is_eight_flops_per_element_and_skip_adds_one():
    x, gamma = f32(1, 128, 384), f32(384, constant=True)
    cost = node_cost("LayerNormalization", [x, gamma, gamma], [x])
    assert cost == NodeCost(8 * 49152, (49152 + 384 + 384 + 49152) * 4, "normalization", "float32")
    assert node_cost("SkipLayerNormalization", [x, x, gamma, gamma], [x], domain="com.microsoft").flops == 9 * 49152


def test_qdq_pair_costs_two_flops_per_element_at_int8_and_float_sizes():
    m = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
               helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], name="dq")],
              [helper.make_tensor_value_info("x", F32, [1, 1000])], [helper.make_tensor_value_info("y", F32, None)],
              [weight("s", dtype=np.float32), weight("z", dtype=np.uint8)])
    q, dq = graph_costs(m, {})
    # x float32 (4000) + scale (4) + zero point (1) + q uint8 (1000), and the same bytes back the other way.
    assert q == ("q", "QuantizeLinear", NodeCost(2000, 5005, "quantize", "float32"))
    assert dq == ("dq", "DequantizeLinear", NodeCost(2000, 5005, "quantize", "float32"))


def test_matmul_integer_uint8_by_int8_runs_in_int8_and_writes_int32():
    a, b = TensorInfo((1, 128, 384), "uint8"), TensorInfo((384, 1536), "int8", True)
    zps = [TensorInfo((), "uint8"), TensorInfo((), "int8")]
    cost = node_cost("MatMulInteger", [a, b, *zps], [TensorInfo((1, 128, 1536), "int32")])
    assert cost == NodeCost(2 * 128 * 384 * 1536, 49152 + 589824 + 2 + 196608 * 4, "matmul", "int8")


def test_matmul_nbits_uses_k_attr_and_the_packed_weight_bytes_as_given():
    a, out = f32(1, 128, 384), f32(1, 128, 1536)
    packed = TensorInfo((1536, 12, 16), "uint8", True)  # 4-bit blocks of 32: 16 bytes per block
    scales = f32(1536 * 12, constant=True)
    attrs = {"K": 384, "N": 1536, "bits": 4, "block_size": 32}
    cost = node_cost("MatMulNBits", [a, packed, scales], [out], attrs, domain="com.microsoft")
    assert cost == NodeCost(2 * 128 * 1536 * 384, 49152 * 4 + 1536 * 12 * 16 + 18432 * 4 + 196608 * 4, "matmul",
                            "float32")
    as_int4 = node_cost("MatMulNBits", [a, TensorInfo((1536, 384), "int4", True), scales], [out], attrs)
    assert as_int4.bytes == cost.bytes


def test_contrib_attention_counts_projection_scores_context_and_softmax():
    x, w, bias, out = f32(2, 16, 64), f32(64, 192, constant=True), f32(192, constant=True), f32(2, 16, 64)
    cost = node_cost("Attention", [x, w, bias], [out], {"num_heads": 4}, domain="com.microsoft")
    projection = 2 * 2 * 16 * 64 * 192 + 2 * 16 * 192
    scores = context = 2 * 2 * 16 * 16 * 64
    softmax = 5 * 2 * 4 * 16 * 16
    assert cost == NodeCost(projection + scores + context + softmax, (2048 + 12288 + 192 + 2048) * 4, "attention",
                            "float32")


def test_attention_with_past_attends_over_past_plus_current():
    x, w, out = f32(1, 1, 64), f32(64, 192), f32(1, 1, 64)
    past = f32(2, 1, 4, 31, 16)
    cost = node_cost("Attention", [x, w, None, None, past], [out], {"num_heads": 4})  # weights 2-D: contrib op
    assert cost.flops == 2 * 64 * 192 + 2 * (2 * 32 * 64) + 5 * 4 * 32


def test_maxpool_counts_kernel_window_per_output():
    m = model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])],
              [helper.make_tensor_value_info("x", F32, [1, 16, 32, 32])],
              [helper.make_tensor_value_info("y", F32, None)])
    out = 16 * 16 * 16
    assert only_cost(m, {}) == NodeCost(out * 4, (16 * 32 * 32 + out) * 4, "reduction", "float32")


def test_graph_costs_at_batch_4_with_stale_value_info_and_a_free_reshape():
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Add", ["h", "b"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["r"]),
             helper.make_node("Reshape", ["r", "flat"], ["y"], name="reshape")]
    stale = helper.make_tensor_value_info("h", F32, [1, 8])  # exported at batch 1
    m = model(nodes, [helper.make_tensor_value_info("x", F32, ["batch", 16])],
              [helper.make_tensor_value_info("y", F32, ["batch_x_8"])],
              [weight("w", 16, 8), weight("b", 8), numpy_helper.from_array(np.array([-1], np.int64), "flat")],
              value_info=[stale])
    costs = graph_costs(m, {"x": (4, 16)})
    assert [(name, op, c.flops, c.bytes) for name, op, c in costs] == [
        ("mm", "MatMul", 2 * 4 * 8 * 16, (4 * 16 + 16 * 8 + 4 * 8) * 4),
        ("add", "Add", 32, (32 + 8 + 32) * 4),
        ("Relu_2", "Relu", 32, 2 * 32 * 4),  # unnamed: op and index, as ONNX Runtime names it
        ("reshape", "Reshape", 0, 0),  # a view: no bytes move
    ]
    assert costs[3][2].kind == "data-movement"


def test_graph_costs_reads_a_saved_model_and_rejects_unknown_input_names(tmp_path):
    m = model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [helper.make_tensor_value_info("x", F32, ["n"])],
              [helper.make_tensor_value_info("y", F32, None)])
    onnx.save(m, tmp_path / "m.onnx")
    assert graph_costs(tmp_path / "m.onnx", {"x": (10,)}) == [("relu", "Relu", NodeCost(10, 80, "elementwise",
                                                                                        "float32"))]
    with pytest.raises(ValueError, match="'z'"):
        graph_costs(str(tmp_path / "m.onnx"), {"z": (1,)})


def test_unknown_op_counts_bytes_of_what_is_known_and_never_raises():
    m = model([helper.make_node("Mystery", ["x"], ["h"], name="mystery", domain="custom"),
               helper.make_node("Relu", ["h"], ["y"], name="relu")],
              [helper.make_tensor_value_info("x", F32, [2, 3])], [helper.make_tensor_value_info("y", F32, None)])
    m.opset_import.append(helper.make_opsetid("custom", 1))
    mystery, relu = graph_costs(m, {})
    assert mystery == ("mystery", "Mystery", NodeCost(0, 24, "other", "float32"))  # its output's shape is unknown
    assert relu[2].bytes == 0 and relu[2].flops == 0
    assert node_cost("Attention", [f32(3)], [f32(3)]).flops == 0  # a shape the rule cannot read: 0, not an error


def test_bytes_pack_int4_two_per_byte_and_count_absent_inputs_as_zero():
    cost = node_cost("Mystery", [TensorInfo((3,), "int4"), None, TensorInfo((5,), "bool")],
                     [TensorInfo((3,), "uint4"), TensorInfo((2,), "float8_e4m3fn"), TensorInfo((2,), "bfloat16")])
    assert cost == NodeCost(0, 2 + 0 + 5 + 2 + 2 + 4, "other", "float8_e4m3fn")


def test_compute_dtype_follows_half_precision_inputs():
    h = TensorInfo((4, 4), "float16")
    assert node_cost("MatMul", [h, h], [h]).compute_dtype == "float16"
    assert node_cost("QLinearAdd", [TensorInfo((4,), "uint8")], [TensorInfo((4,), "uint8")]).compute_dtype == "int8"


def test_openvino_fully_connected_convolution_and_reorder():
    fc = openvino_layer_cost("FullyConnected", [f32(1, 128, 384), f32(1536, 384, constant=True)], [f32(1, 128, 1536)])
    assert fc == NodeCost(2 * 128 * 384 * 1536, (49152 + 589824 + 196608) * 4, "matmul", "float32")
    int8_fc = openvino_layer_cost("FullyConnected", [TensorInfo((1, 384), "u8"), TensorInfo((1536, 384), "i8")],
                                  [f32(1, 1536)])
    assert int8_fc.compute_dtype == "int8"
    conv = openvino_layer_cost("Convolution", [f32(1, 3, 32, 32), f32(16, 3, 3, 3), f32(1, 16, 1, 1)],
                               [f32(1, 16, 32, 32)])
    assert conv == NodeCost(2 * 16384 * 27 + 16384, (3072 + 432 + 16 + 16384) * 4, "conv", "float32")
    depthwise = openvino_layer_cost("GroupConvolution", [f32(1, 32, 16, 16), f32(32, 1, 1, 3, 3)], [f32(1, 32, 16, 16)])
    assert depthwise.flops == 2 * 8192 * 9
    reorder = openvino_layer_cost("Reorder", [f32(1, 16, 32, 32)], [f32(1, 16, 32, 32)])
    assert reorder == NodeCost(0, 2 * 16384 * 4, "data-movement", "float32")
    assert openvino_layer_cost("Const", [], [f32(1536, 384)]) == NodeCost(0, 0, "other", "float32")


def test_openvino_sdpa_and_subgraph():
    q, kv = f32(1, 8, 32, 64), f32(1, 8, 48, 64)
    sdpa = openvino_layer_cost("ScaledDotProductAttention", [q, kv, kv], [q])
    assert sdpa.flops == 2 * (2 * 8 * 32 * 48 * 64) + 5 * 8 * 32 * 48
    assert sdpa.kind == "attention"
    assert openvino_layer_cost("Subgraph", [f32(4, 10), f32(4, 10)], [f32(4, 10)]).flops == 40


def test_dtype_name_normalises_ort_onnx_openvino_and_numpy_names():
    ort = ["float", "double", "float16", "bfloat16", "int8", "uint8", "int64", "bool", "tensor(float)"]
    assert [dtype_name(n) for n in ort] == ["float32", "float64", "float16", "bfloat16", "int8", "uint8", "int64",
                                            "bool", "float32"]
    enums = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.INT8, TensorProto.INT4,
             TensorProto.UINT4, TensorProto.FLOAT8E4M3FN, TensorProto.INT64]
    assert [dtype_name(e) for e in enums] == ["float32", "float16", "bfloat16", "int8", "int4", "uint4",
                                              "float8_e4m3fn", "int64"]
    openvino = ["f32", "f16", "bf16", "i8", "u8", "i32", "i64", "u4", "i4", "boolean", "f8e4m3", "FP32"]
    assert [dtype_name(n) for n in openvino] == ["float32", "float16", "bfloat16", "int8", "uint8", "int32", "int64",
                                                 "uint4", "int4", "bool", "float8_e4m3fn", "float32"]
    assert [dtype_name(n) for n in ("float32", "float8_e4m3fn", np.dtype("float16"), np.int8)] == [
        "float32", "float8_e4m3fn", "float16", "int8"]
    assert dtype_name("mystery") == "mystery"
    assert TensorInfo([2, 3], "f16") == TensorInfo((2, 3), "float16")


def test_shape_arithmetic_is_evaluated_so_position_ids_and_what_follows_get_sizes():
    # Shape -> Gather -> Range -> Gather(positions): infer_shapes(data_prop=True) leaves the Range length unknown.
    nodes = [helper.make_node("Shape", ["x"], ["shape"]),
             helper.make_node("Gather", ["shape", "one"], ["seq"], axis=0),
             helper.make_node("Range", ["zero", "seq", "one"], ["ids"]),
             helper.make_node("Gather", ["positions", "ids"], ["embedded"], name="positions"),
             helper.make_node("MatMul", ["embedded", "w"], ["y"], name="mm")]
    scalar = [numpy_helper.from_array(np.array(v, np.int64), n) for n, v in (("zero", 0), ("one", 1))]
    m = model(nodes, [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", "sequence"])],
              [helper.make_tensor_value_info("y", F32, None)],
              [*scalar, weight("positions", 512, 8), weight("w", 8, 4)])
    costs = {name: cost for name, _, cost in graph_costs(m, {"x": (2, 16)})}
    assert costs["mm"].flops == 2 * 16 * 4 * 8
    assert costs["positions"].bytes == 16 * 8 * 4 + 16 * 8 + 16 * 8 * 4  # 16 rows of the 512 read, ids, output


def test_contrib_ops_get_output_shapes_so_the_nodes_after_them_are_costed():
    nodes = [helper.make_node("BiasGelu", ["x", "b"], ["g"], name="gelu", domain="com.microsoft"),
             helper.make_node("Attention", ["g", "qkv", "qkv_bias"], ["a"], name="attention", domain="com.microsoft",
                              num_heads=4),
             helper.make_node("MatMul", ["a", "w"], ["y"], name="mm")]
    m = model(nodes, [helper.make_tensor_value_info("x", F32, ["batch", 16, 64])],
              [helper.make_tensor_value_info("y", F32, None)],
              [weight("b", 64), weight("qkv", 64, 192), weight("qkv_bias", 192), weight("w", 64, 10)])
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    costs = {name: cost for name, _, cost in graph_costs(m, {"x": (2, 16, 64)})}
    assert costs["gelu"].flops == 8 * 2 * 16 * 64
    assert costs["attention"].bytes == (2048 + 64 * 192 + 192 + 2048) * 4
    assert costs["mm"] == NodeCost(2 * 2 * 16 * 10 * 64, (2048 + 640 + 320) * 4, "matmul", "float32")


def test_gather_reads_only_the_rows_it_indexes_not_the_whole_table():
    cost = node_cost("Gather", [f32(30522, 384, constant=True), TensorInfo((4, 128), "int64")], [f32(4, 128, 384)])
    assert cost == NodeCost(0, 2 * 4 * 128 * 384 * 4 + 4 * 128 * 8, "data-movement", "float32")
