"""The decoder for OpenVINO: converted from PyTorch, made stateful so the CPU plugin fuses attention with the cache.

Converted from the torch model (ov.convert_model on the same cache wrapper the ONNX export traces), SDPA stays
one ScaledDotProductAttention op, where the ONNX route leaves MatMul + Softmax. The CPU plugin's
StatefulSDPAFusion then replaces ReadValue -> Gather(beam_idx) -> Concat -> SDPA -> Assign by one node that
appends to the cache in place, if the graph has exactly that shape (read from openvino's
stateful_sdpa_fusion.cpp and checked here on the compiled model):
  - a `beam_idx` input gathered on every past input before the Concat (optimum-intel adds the same);
  - every variable initialised by a subgraph ([batch, kv heads, 0, head dim] zeros), not a constant;
  - attention with `causal=True` and no mask. The fused kernel aligns the causal mask to the end of the
    cache; the spec's reference aligns it to the start, which is wrong for a decoding step. So the fusion is
    checked after compiling, and if it did not happen the graph is rebuilt with transformers' own mask as an
    additive bias (exact by the spec, 15 % slower per token here).
Measured on SmolLM2-135M int4, 2 threads: 33 tokens/s without the fusion, 85-90 with it (docs/benchmarks.md).
The batch stays dynamic (inputs, `beam_idx` and the variables' [batch, kv heads, length, head dim]): openvino-genai's
paged-attention transform, continuous batching and speculative decoding need it, and the fusion is the same.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kiln.errors import ExportError
from kiln.llm.export import _wrapper, example_feed, parity
from kiln.llm.source import DecoderSpec
from kiln.quiet import quiet

FUSED_LAYER = "ScaledDotProductAttention"  # the CPU plugin's layer type for the fused node


def export_openvino(model, spec: DecoderSpec, folder: Path) -> dict:
    """Write folder/model.xml (+ .bin), stateless and fp32, and check it against the torch model."""
    import openvino as ov
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    inputs, outputs = spec.io_names()
    trace = example_feed(spec, past=3, seq=5)
    start = time.perf_counter()
    try:
        with torch.no_grad(), quiet():
            converted = ov.convert_model(_wrapper(model, spec),
                                         example_input=tuple(torch.from_numpy(trace[n]) for n in inputs))
    except Exception as exc:  # the converter raises many types; its first line names the op
        raise ExportError(f"OpenVINO could not convert the decoder: {str(exc).splitlines()[0][:300]}",
                          hint="this architecture is not convertible with kiln's cache wrapper yet") from None
    for port, name in zip(converted.inputs, inputs):
        port.get_tensor().set_names({name})
    for port, name in zip(converted.outputs, outputs):
        port.get_tensor().set_names({name})
    ov.save_model(converted, str(folder / "model.xml"), compress_to_fp16=False)
    seconds = time.perf_counter() - start
    attention = sum(op.get_type_name() == "ScaledDotProductAttention" for op in converted.get_ops())
    del converted
    checks = parity(model, spec, folder / "model.xml")
    return {"exporter": "openvino.convert_model (PyTorch frontend)", "opset": None, "seconds": round(seconds, 3),
            "checks": checks, "attempts": [{"exporter": "openvino.convert_model", "ok": True,
                                            "seconds": round(seconds, 3)}],
            "notes": ["one graph for prompt and decoding: past length 0 for the prompt",
                      f"{attention} ScaledDotProductAttention ops (of {spec.layers} layers) kept whole by the converter"]}


def make_stateful(model, spec: DecoderSpec, causal: bool = True):
    """The cache moved inside the model, in the shape StatefulSDPAFusion matches (module docstring)."""
    import openvino as ov
    from openvino import opset13 as ops
    from openvino._offline_transformations import apply_make_stateful_transformation

    inputs, outputs = spec.io_names()
    for op in model.get_ops():
        if op.get_type_name() != "ScaledDotProductAttention":
            continue
        q, k, v = (op.input_value(i) for i in range(3))
        scale = op.input_value(4) if op.get_input_size() > 4 else None
        if causal:
            fused = ops.scaled_dot_product_attention(q, k, v, np.float32(0), scale, causal=True)
        else:
            mask = op.input_value(3)
            if mask.get_element_type() == ov.Type.boolean:
                mask = ops.select(mask, np.float32(0), np.float32(np.finfo(np.float32).min)).output(0)
            fused = ops.scaled_dot_product_attention(q, k, v, mask, scale, causal=False)
        fused.set_friendly_name(op.get_friendly_name())
        op.output(0).replace(fused.output(0))
    beam = ops.parameter(ov.PartialShape([-1]), ov.Type.i32, name="beam_idx")
    beam.output(0).get_tensor().set_names({"beam_idx"})
    model.add_parameters([beam])
    for name in inputs[3:]:
        port = model.input(name)
        consumers = list(port.get_target_inputs())
        reordered = ops.gather(port, beam, np.int64(0))
        for consumer in consumers:
            consumer.replace_source_output(reordered.output(0))
    model.reshape({port: ov.PartialShape([-1, spec.kv_heads, -1, spec.head_dim]) if port.get_any_name() in inputs[3:]
                   else ov.PartialShape([-1]) if port.get_any_name() == "beam_idx" else ov.PartialShape([-1, -1])
                   for port in model.inputs})
    apply_make_stateful_transformation(model, dict(zip(inputs[3:], outputs[1:])))
    batch = ops.gather(ops.shape_of(model.input("input_ids"), output_type="i64"), np.array([0], np.int64),
                       np.int64(0))
    empty = ops.concat([batch, ops.constant(np.array([spec.kv_heads, 0, spec.head_dim], np.int64))], 0)
    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            op.set_arguments([ops.broadcast(ops.constant(np.float32(0)), empty)])
    model.validate_nodes_and_infer_types()
    return model


def fused_attention_layers(model) -> int:
    """How many attention nodes the CPU plugin fused with the cache when compiling `model`."""
    import openvino as ov

    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    runtime = compiled.get_runtime_model()
    return sum(op.get_rt_info()["layerType"].astype(str) == FUSED_LAYER for op in runtime.get_ops())


def stateful_model(path: Path, spec: DecoderSpec) -> tuple[object, dict]:
    """The exported IR made stateful, fused where the CPU plugin fuses it; with what was done."""
    import openvino as ov

    core = ov.Core()
    model = make_stateful(core.read_model(str(path)), spec, causal=True)
    fused = fused_attention_layers(model)
    if fused == spec.layers:
        return model, {"attention": f"fused with the KV cache on CPU ({fused} of {spec.layers} layers)",
                       "fused_attention_layers": fused}
    model = make_stateful(core.read_model(str(path)), spec, causal=False)
    return model, {"attention": f"not fused on this OpenVINO ({fused} of {spec.layers} layers): transformers' "
                                f"mask as an additive bias", "fused_attention_layers": 0}
