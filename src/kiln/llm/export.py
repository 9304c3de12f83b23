"""The decoder as one ONNX graph with its KV cache as inputs and outputs, checked against the torch model.

torch.onnx's TorchScript exporter (opset 17) traces a wrapper that rebuilds transformers' DynamicCache from
the flat past tensors; measured here on transformers 5.24 / torch 2.13 it matches the torch model to 1e-6 for
Llama, Qwen2, Phi-3 and GPT-2 at past lengths 0 (the prompt) and N (decoding). The dynamo exporter refused the
dynamic past length (its shape constraints between past, sequence and mask lengths), so it is not used.
Weights always go to one external data file: graphs over 2 GB cannot be a single protobuf.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kiln.errors import ExportError
from kiln.quiet import quiet
from kiln.llm.source import DecoderSpec

OPSET = 17
DATA_NAME = "model.onnx.data"


def cache_argument(model) -> str:
    """transformers 5 renamed `past_key_values` to `cache` (the old name warns, and goes in 5.40)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _conv1d_as_matmul(model) -> None:
    """GPT-2's Conv1D layers compute addmm on a flattened input, which torch.onnx writes as Gemm; weight-only
    quantization replaces MatMul nodes. The same product as MatMul + Add, set on the loaded model in place."""
    import types

    import torch
    from transformers.pytorch_utils import Conv1D

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias

    for module in model.modules():
        if isinstance(module, Conv1D):
            module.forward = types.MethodType(forward, module)


def _wrapper(model, spec: DecoderSpec):
    import torch
    from transformers import DynamicCache

    _conv1d_as_matmul(model)

    CACHE_ARGUMENT = cache_argument(model)

    class DecoderWithCache(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, position_ids, *past):
            # Each layer starts from the given tensors. DynamicCache(pairs) would first concatenate them onto an
            # empty 1-D tensor, which torch tolerates and OpenVINO's converter rejects.
            cache = DynamicCache(config=model.config)
            for layer, keys, values in zip(cache.layers, past[0::2], past[1::2]):
                layer.keys, layer.values, layer.device, layer.is_initialized = keys, values, keys.device, True
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=True, **{CACHE_ARGUMENT: cache})
            present = []
            for layer in out.past_key_values.layers:
                present += [layer.keys, layer.values]
            return (out.logits, *present)

    return DecoderWithCache().eval()


def example_feed(spec: DecoderSpec, past: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feed = {"input_ids": rng.integers(0, spec.vocab_size, (1, seq), dtype=np.int64),
            "attention_mask": np.ones((1, past + seq), dtype=np.int64),
            "position_ids": np.arange(past, past + seq, dtype=np.int64)[None]}
    for name in spec.io_names()[0][3:]:
        feed[name] = (rng.standard_normal((1, spec.kv_heads, past, spec.head_dim)) * 0.5).astype(np.float32)
    return feed


def export_decoder(model, spec: DecoderSpec, folder: Path) -> dict:
    """Write folder/model.onnx (+ model.onnx.data); return the export record with its parity checks."""
    import onnx
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    inputs, outputs = spec.io_names()
    axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "total_sequence"},
            "position_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}}
    axes.update({name: {0: "batch", 2: "past_sequence"} for name in inputs[3:]})
    axes.update({name: {0: "batch", 2: "total_sequence"} for name in outputs[1:]})
    trace = example_feed(spec, past=3, seq=5)
    start = time.perf_counter()
    raw = folder / "traced"
    raw.mkdir(exist_ok=True)
    try:
        with torch.no_grad(), quiet():
            torch.onnx.export(_wrapper(model, spec), tuple(torch.from_numpy(trace[n]) for n in inputs),
                              str(raw / "model.onnx"), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                              opset_version=OPSET, dynamo=False, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types; one line says which op or construct failed
        raise ExportError(f"torch.onnx could not export the decoder: {str(exc).splitlines()[0][:300]}",
                          hint="this architecture is not exportable with kiln's cache wrapper yet") from None
    graph = onnx.load(str(raw / "model.onnx"), load_external_data=True)
    (folder / DATA_NAME).unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(graph, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=DATA_NAME, size_threshold=1024)
    del graph
    import shutil

    shutil.rmtree(raw)
    seconds = time.perf_counter() - start
    checks = parity(model, spec, folder / "model.onnx")
    return {"exporter": "torchscript", "opset": OPSET, "seconds": round(seconds, 3), "checks": checks,
            "attempts": [{"exporter": "torchscript", "ok": True, "seconds": round(seconds, 3)}],
            "notes": ["one graph for prompt and decoding: past length 0 for the prompt"]}


def _runner(path: Path, outputs: list[str]):
    """feed -> outputs in order, for an ONNX graph (ONNX Runtime) or an OpenVINO IR (CPU, fp32 arithmetic)."""
    if path.suffix == ".xml":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        names = [i.get_any_name() for i in compiled.inputs]

        def run(feed):
            results = compiled({name: feed[name] for name in names})
            return [results[compiled.output(name)] for name in outputs]

        return run
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda feed: session.run(outputs, {i.name: feed[i.name] for i in session.get_inputs()})


def parity(model, spec: DecoderSpec, path: Path, rtol: float = 1e-3) -> list[dict]:
    """The exported graph against the torch model at a prompt (past 0) and a decoding step (past > 0)."""
    import torch

    wrapper = _wrapper(model, spec)
    inputs, outputs = spec.io_names()
    run = _runner(path, outputs)
    rows = []
    for label, past, seq in (("prompt (past 0)", 0, 16), ("decoding step (past 16)", 16, 1)):
        feed = example_feed(spec, past, seq, seed=past + 1)
        with torch.no_grad():
            want = [t.numpy() for t in wrapper(*(torch.from_numpy(feed[n]) for n in inputs))]
        got = run(feed)
        worst = {}
        for name, a, b in zip(outputs, want, got):
            if a.shape != b.shape:
                raise ExportError(f"the exported decoder's {name} has shape {list(b.shape)} at the {label}, the "
                                  f"torch model's {list(a.shape)}", hint="report this model to kiln")
            worst[name] = float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) or 1.0))
        name, error = max(worst.items(), key=lambda kv: kv[1])
        rows.append({"inputs": label, "worst_output": name, "max_rel_error": error, "ok": error <= rtol})
        if error > rtol:
            raise ExportError(f"the exported decoder does not match the torch model at the {label}: {name} differs "
                              f"by {error:.3g} of its scale (limit {rtol:g})", hint="report this model to kiln")
    return rows
