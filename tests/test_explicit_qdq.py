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
from kiln.passes.explicit_qdq import quantize_for_tensorrt, rest_in_fp16


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
                              [weight("w_stem", 16, 3, 3, 3), weight("w_expand", 16, 16, 1, 1),
                               weight("w_dw", 16, 1, 3, 3), weight("w_pw", 32, 16, 1, 1)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))


def _reading_dequantized(path) -> set[str]:
    model = onnx.load(str(path))
    producers = {o: n for n in model.graph.node for o in n.output}
    return {n.name for n in model.graph.node if n.op_type not in ("QuantizeLinear", "Cast")
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


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_the_model_output_is_not_rounded_to_low_precision(tmp_path, kind):
    """ONNX Runtime's quantizer puts a Q/DQ pair on every quantized Conv's output, the last one's too: the model's
    output then came out on the int8/fp8 grid (EfficientNet-Lite0's fp8 logits kept 3 mantissa bits; top-1 agreement
    with every unit restored was 87.5 % instead of 100 %). The last Conv's float output is now the model's output: it
    equals a float 1x1 convolution of its dequantized input and weight."""
    import onnxruntime as ort

    _conv_net(tmp_path / "net.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    details = quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "q.onnx", Samples(tuple(feeds), "arrays",
                                                                                       "random"), kind)
    assert details["float_outputs"] == ["y"]
    model = onnx.load(str(tmp_path / "q.onnx"))
    onnx.checker.check_model(model, full_check=True)
    writer = {o: n for n in model.graph.node for o in n.output}
    assert writer["y"].op_type == "Identity"  # of the last Conv's float output, no Q/DQ between
    last = writer[writer["y"].input[0]]
    assert last.name == "pointwise"
    model.graph.output.extend([helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in last.input[:2]])
    y, activation, weight = ort.InferenceSession(model.SerializeToString()).run(["y", *last.input[:2]], feeds[0])
    expected = np.einsum("oc,nchw->nohw", weight[:, :, 0, 0].astype(np.float64), activation.astype(np.float64))
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert len(np.unique(y)) > 0.9 * y.size  # not a grid: an fp8 output had at most 255 values per scale


@pytest.mark.parametrize("kind", ["int8", "fp8"])
def test_the_rest_in_fp16_keeps_qdq_and_matches_the_fp32_rest(tmp_path, kind):
    """ModelOpt's layout for strongly typed TensorRT: fp16 scales, so DequantizeLinear writes fp16 into the low-precision
    layer and everything between runs fp16; graph inputs and outputs keep their types, and ONNX Runtime gives the
    fp32-rest graph's outputs to fp16 rounding: cosine 0.99989 (int8) and 0.99992 (fp8) between the two, where either
    differs from the float source by more (int8 0.99955, fp8 0.99763), so the bound sees a conversion that moves
    the graph by a quantization step."""
    import onnxruntime as ort

    _conv_net(tmp_path / "net.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "q.onnx", Samples(tuple(feeds), "arrays", "random"), kind)
    fp32_rest = tmp_path / "fp32_rest.onnx"
    fp32_rest.write_bytes((tmp_path / "q.onnx").read_bytes())
    details = rest_in_fp16(tmp_path / "q.onnx", feeds[:2])
    model = onnx.load(str(tmp_path / "q.onnx"))
    inits = {i.name: i for i in model.graph.initializer}
    scales = {inits[n.input[1]].data_type for n in model.graph.node if n.op_type == "DequantizeLinear"}
    assert scales == {TensorProto.FLOAT16} and details["pass"] == "the rest in fp16 (Q/DQ scales fp16)"
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 19
    assert [i.type.tensor_type.elem_type for i in list(model.graph.input) + list(model.graph.output)] == \
        [TensorProto.FLOAT, TensorProto.FLOAT]
    assert _reading_dequantized(tmp_path / "q.onnx") == _reading_dequantized(fp32_rest)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    a = ort.InferenceSession(str(fp32_rest), options).run(None, feeds[0])[0].ravel()
    b = ort.InferenceSession(str(tmp_path / "q.onnx"), options).run(None, feeds[0])[0].ravel()
    assert float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)) > 0.9995


def test_an_fp32_island_in_the_fp16_rest_is_still_a_unit_and_restores_to_fp32(tmp_path):
    """A node the island search keeps in fp32 reads its DequantizeLinear's fp16 output through a Cast. It must stay
    a unit (before, the Cast hid the DQ: Basic Pitch's constant-Q convolutions could never be restored, and even
    every unit restored missed the budget), the Cast must not be a unit of its own, and restoring it gives it the
    original fp32 weight and an fp32 Cast of the float activation: it then computes exactly what the float graph's
    node does on the same input."""
    import onnxruntime as ort

    from kiln.passes.qdq_units import find_units, float_weights, restore_units

    _conv_net(tmp_path / "net.onnx")
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(8)]
    quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "q.onnx", Samples(tuple(feeds), "arrays", "random"), "int8")
    rest_in_fp16(tmp_path / "q.onnx", feeds[:2], islands=("expand",))
    qdq = onnx.load(str(tmp_path / "q.onnx"))
    producers = {o: n for n in qdq.graph.node for o in n.output}
    expand = next(n for n in qdq.graph.node if n.name == "expand")
    assert [producers[i].op_type for i in expand.input[:2]] == ["Cast", "Cast"]  # the island behind its Casts
    units = {u.name: u for u in find_units(qdq)}
    assert {"stem", "expand", "depthwise", "pointwise"} <= set(units)
    assert not any(u.op_type == "Cast" for u in units.values())

    float_model = onnx.load(str(tmp_path / "net.onnx"))
    restored = restore_units(qdq, [units["expand"]], float_weights(float_model))
    onnx.checker.check_model(restored, full_check=True)
    inits = {t.name: t for t in restored.graph.initializer}
    node = next(n for n in restored.graph.node if n.name == "expand")
    weight = inits[node.input[1]]
    assert weight.data_type == TensorProto.FLOAT
    assert np.array_equal(numpy_helper.to_array(weight), numpy_helper.to_array(
        next(t for t in float_model.graph.initializer if t.name == "w_expand")))
    cast = next(n for n in restored.graph.node if n.output[0] == node.input[0])
    assert cast.op_type == "Cast" and cast.attribute[0].i == TensorProto.FLOAT
    # the island's output and its input, exposed: an fp32 Conv of its fp32 input, to fp32 precision (an fp16 one
    # would be off by about 1e-3 at these values)
    restored.graph.output.extend([helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                                  for name in (node.output[0], node.input[0])])
    got, island_input = ort.InferenceSession(restored.SerializeToString()).run([node.output[0], node.input[0]], feeds[0])
    expected = np.einsum("oc,nchw->nohw", numpy_helper.to_array(weight)[:, :, 0, 0].astype(np.float64),
                         island_input.astype(np.float64))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_a_graph_onnx_runtime_cannot_run_keeps_its_fp32_rest_and_says_why(tmp_path):
    """Basic Pitch's int8 graph has a Transpose ONNX Runtime refuses: the fp16 range probe is a one-line reason in the
    report (the graph is refused later, at validation, exit 5), not a traceback; the file is left as it was."""
    graph = helper.make_graph([helper.make_node("Transpose", ["x"], ["y"], name="bad", perm=[0, 2, 3, 1])], "bad",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [36])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(path))
    before = path.read_bytes()
    details = rest_in_fp16(path, [{"x": np.ones(36, np.float32)}])
    assert details["pass"] == "none: the rest stays fp32"
    assert details["why"].startswith("ONNX Runtime cannot run the graph to measure what fp16 would overflow")
    assert path.read_bytes() == before


def _input_scale(path) -> float:
    model = onnx.load(str(path))
    values = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == "x")
    return float(values[quantize.input[1]])


def test_samples_of_two_shapes_calibrate_one_range_over_both(tmp_path):
    """An OCR model's pages or audio clips come in several sizes. ONNX Runtime's percentile calibrator stacks one
    read's activations into one array, which fails on mixed shapes ("inhomogeneous shape": ppocr-det, mtcnn-pnet):
    kiln feeds it one shape group per read and it merges the histograms. The input's range must be the one the same
    values give in one shape (each 32x32 image cut into four 16x16 tiles), where the larger images' larger values
    count."""
    _conv_net(tmp_path / "fixed.onnx")
    model = onnx.load(str(tmp_path / "fixed.onnx"))
    for value in (model.graph.input[0], model.graph.output[0]):
        for axis, name in ((2, "h"), (3, "w")):
            value.type.tensor_type.shape.dim[axis].dim_param = name
    onnx.save(model, str(tmp_path / "net.onnx"))
    rng = np.random.default_rng(2)
    small = [rng.standard_normal((1, 3, 16, 16)).astype(np.float32) for _ in range(4)]
    large = [3 * rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(2)]
    interleaved = [small[0], large[0], small[1], small[2], large[1], small[3]]  # read two at a time: grouped first
    mixed = Samples(tuple({"x": x} for x in interleaved), "arrays", "two sizes")
    details = quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "mixed.onnx", mixed)
    assert details["calibration_shapes"] == 2 and details["quantized_ops"] == {"Conv": 4}
    tiles = [x[:, :, i:i + 16, j:j + 16] for x in large for i in (0, 16) for j in (0, 16)]
    one_shape = Samples(tuple({"x": np.ascontiguousarray(x)} for x in small + tiles), "arrays", "tiled")
    assert quantize_for_tensorrt(tmp_path / "net.onnx", tmp_path / "tiled.onnx", one_shape)["calibration_shapes"] == 1
    assert _input_scale(tmp_path / "mixed.onnx") == pytest.approx(_input_scale(tmp_path / "tiled.onnx"), rel=0.005)
    assert _input_scale(tmp_path / "mixed.onnx") > 2 * max(np.abs(x).max() for x in small) / 127


def test_the_calibration_reader_reads_one_shape_per_window_largest_values_first():
    """The reader the quantizer gets: windows of `stride` samples never mix shapes (3 + 2 samples: one at a time),
    and the shape group with the largest input values comes first, since the first read sets the histogram's bin
    width; one shape keeps the samples' order and reads them all at once."""
    from kiln.passes.qdq_common import CalibrationReader

    rng = np.random.default_rng(3)
    quiet_clips = [{"x": 0.01 * rng.standard_normal((1, 100)).astype(np.float32)} for _ in range(3)]
    loud_clips = [{"x": rng.standard_normal((1, 160)).astype(np.float32)} for _ in range(2)]
    reader = CalibrationReader(Samples(tuple(quiet_clips + loud_clips), "arrays", "clips"), {"x"})
    assert len(reader) == 5 and reader.stride == 1 and reader.strided() == {"CalibStridedMinMax": 1}
    windows = []
    for start in range(0, len(reader), reader.stride):
        reader.set_range(start, start + reader.stride)
        windows.append([feed["x"].shape for feed in iter(reader.get_next, None)])
    assert windows == [[(1, 160)]] * 2 + [[(1, 100)]] * 3
    same = [{"x": rng.standard_normal((1, 100)).astype(np.float32)} for _ in range(4)]
    one_shape = CalibrationReader(Samples(tuple(same), "arrays", "clips"), {"x"})
    assert one_shape.stride is None and one_shape.strided() == {}
    assert all(got["x"] is want["x"] for got, want in zip(iter(one_shape.get_next, None), same))


def test_keep_fp32_names_the_exact_node_first_and_keeps_the_moves_after_it(tmp_path):
    """`--keep-fp32 NAME` takes the node of exactly that name where there is one, else every node whose name contains
    it (a scope), so a unit name from report.md passed back keeps that unit and not its neighbours whose names
    extend it. At fp16 the kept node's Relu stays fp32 with it: an fp16 Relu between fp32 nodes would round the
    tensor the node was kept for."""
    from kiln.passes.half_precision import to_fp16
    from kiln.passes.qdq_common import matching_names

    names = ["conv1d_16", "conv1d_16/ExpandDims", "conv1d_160", "layer.3/attn", "layer.3/ffn"]
    assert matching_names(names, ("conv1d_16",)) == ["conv1d_16"]
    assert matching_names(names, ("conv1d_1",)) == ["conv1d_16", "conv1d_16/ExpandDims", "conv1d_160"]
    assert matching_names(names, ("layer.3/", "conv1d_160")) == ["conv1d_160", "layer.3/attn", "layer.3/ffn"]

    _conv_net(tmp_path / "net.onnx")
    to_fp16(tmp_path / "net.onnx", tmp_path / "half.onnx", ("expand",))
    typed = onnx.shape_inference.infer_shapes(onnx.load(str(tmp_path / "half.onnx")))
    types = {v.name: v.type.tensor_type.elem_type for v in list(typed.graph.value_info) + list(typed.graph.output)}
    writes = {n.name: types[n.output[0]] for n in typed.graph.node if n.op_type != "Cast"}
    assert writes["expand"] == writes["expand_relu"] == TensorProto.FLOAT
    assert writes["stem"] == writes["stem_relu"] == writes["depthwise"] == TensorProto.FLOAT16
