"""The models, their baselines (torch eager) and the peers' default recipes, as the benchmark runs them.

Peer recipes are rebuilt here from their documented defaults, independently of kiln's own code:
- MiniLM: a plain torch.onnx export, then ONNX Runtime `quantize_dynamic` with Optimum's
  `AutoQuantizationConfig.avx512_vnni(is_static=False)` settings (int8 symmetric per-tensor weights,
  uint8 activations, Optimum's default operator list), and the same per-channel.
- EfficientNet-Lite0: a plain torch.onnx export, then `quantize_static` QDQ with MinMax calibration on
  the same calibration images kiln uses: U8S8 per-channel (ORT's documented CPU recipe), S8S8, per-tensor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import zoo

OPTIMUM_DYNAMIC_OPS = ["Conv", "MatMul", "Attention", "LSTM", "Gather", "Transpose", "EmbedLayerNormalization"]


def ort_session(path: Path, settings: dict | None = None):
    """A peer's session: ONNX Runtime defaults (ORT_ENABLE_ALL) with the benchmark's thread count."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def kiln_session(artifact: Path) -> Callable:
    """The artifact exactly as recorded: its model and runtime settings (runtime.json)."""
    runtime = json.loads((artifact / "runtime.json").read_text())
    if runtime["backend"] == "openvino":
        from kiln.backends.openvino.session import compile_model

        request = compile_model(artifact / runtime["model"], runtime["settings"]).create_infer_request()
        return lambda feed: request.infer(feed)
    from kiln.backends.onnxruntime.session import make_session

    session = make_session(artifact / runtime["model"], runtime["settings"])
    return lambda feed: session.run(None, feed)


def openvino_peers(plain: Path, calibration: list[dict]) -> dict:
    """OpenVINO as its docs show it: convert_model, then nncf.quantize with default settings; and the
    plain conversion compiled with no precision hint (bf16 on AVX512_BF16/AMX CPUs)."""
    import nncf
    import openvino as ov

    core = ov.Core()
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": "2"}
    default = core.compile_model(ov.convert_model(str(plain)), "CPU", config).create_infer_request()
    quantized = nncf.quantize(ov.convert_model(str(plain)), nncf.Dataset(calibration), subset_size=len(calibration))
    int8 = core.compile_model(quantized, "CPU", config).create_infer_request()
    return {"OpenVINO default (no hint: bf16 here)": lambda feed: [v for v in default.infer(feed).values()],
            "OpenVINO int8, plain nncf.quantize": lambda feed: [v for v in int8.infer(feed).values()]}


def _runs_in(report: dict) -> str:
    precision = report.get("execution_precision")
    return f"; executes in {precision}" if precision else ""


def _runner(session) -> Callable:
    return lambda feed: session.run(None, feed)


@dataclass
class ModelSpec:
    baseline: str
    kiln_runs: dict[str, list[str]]
    bench_feed: dict
    torch_feed: dict
    per_round: int
    torch_variants: Callable[[], dict]
    peer_sessions: Callable[[], dict]
    describe_kiln: Callable[[dict], str]
    extra: dict = field(default_factory=dict)


# -- MiniLM ---------------------------------------------------------------------------------------------

def _pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    m = mask[..., None].astype(np.float32)
    v = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def minilm(work: Path) -> ModelSpec:
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel, AutoTokenizer

    path = zoo.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    model = AutoModel.from_pretrained(str(path)).eval()  # as users load it (default attention)
    sentences = [s for s in zoo.EVAL_SENTENCES.read_text().splitlines() if s.strip()]
    names = ["input_ids", "attention_mask", "token_type_ids"]

    def encode(text: str) -> dict:
        enc = tokenizer([text], padding="max_length", truncation=True, max_length=128, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in names}

    feeds = [encode(s) for s in sentences]
    with torch.inference_mode():
        reference = [_pool(model(**{k: torch.from_numpy(v) for k, v in f.items()}).last_hidden_state.numpy(),
                           f["attention_mask"]) for f in feeds]

    def min_cosine(run: Callable) -> float:
        cos = [float((_pool(run(f)[0], f["attention_mask"]) * r).sum()) for f, r in zip(feeds, reference)]
        return min(cos)

    work.mkdir(parents=True, exist_ok=True)
    plain = work / "plain.onnx"

    class Hidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = AutoModel.from_pretrained(str(path), attn_implementation="eager").eval()

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.m(input_ids=input_ids, attention_mask=attention_mask,
                          token_type_ids=token_type_ids).last_hidden_state

    example = tuple(torch.from_numpy(feeds[0][k]) for k in names)
    torch.onnx.export(Hidden(), example, str(plain), dynamo=False, input_names=names,
                      output_names=["last_hidden_state"], opset_version=17,
                      dynamic_axes={k: {0: "batch", 1: "sequence"} for k in names + ["last_hidden_state"]})

    def peers() -> dict:
        out = {"ORT fp32, plain export": ort_session(plain)}
        for per_channel in (False, True):
            q = work / f"optimum_{'pc' if per_channel else 'pt'}.onnx"
            quantize_dynamic(str(plain), str(q), weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=False, op_types_to_quantize=OPTIMUM_DYNAMIC_OPS,
                             extra_options={"WeightSymmetric": True, "ActivationSymmetric": False,
                                            "MatMulConstBOnly": False})
            label = f"ORT int8 dynamic, Optimum avx512_vnni recipe ({'per-channel' if per_channel else 'per-tensor'})"
            out[label] = ort_session(q)
        runs = {k: _runner(s) for k, s in out.items()}
        runs.update(openvino_peers(plain, [encode(s) for s in zoo.CALIBRATION_SENTENCES.read_text().splitlines()[:200]]))
        return {k: (run, f"cosine min {min_cosine(run):.4f}") for k, run in runs.items()}

    def torch_variants() -> dict:
        def eager(feed):
            with torch.inference_mode():
                return model(**feed)

        def eager_ftz(feed):
            torch.set_flush_denormal(True)
            try:
                with torch.inference_mode():
                    return model(**feed)
            finally:
                torch.set_flush_denormal(False)

        return {"torch eager fp32": eager, "torch eager fp32, denormals flushed": eager_ftz}

    def describe(report: dict) -> str:
        m = report["accuracy"]["outputs"]["sentence_embedding"]
        return f"cosine min {m['cosine_min']:.4f}" + _runs_in(report)

    common = [str(path), "--eval", str(zoo.EVAL_SENTENCES)]
    return ModelSpec(
        baseline="torch eager fp32",
        kiln_runs={"kiln fp32": common,
                   "kiln int8-dynamic": common + ["--precision", "int8-dynamic", "--calibration",
                                                  str(zoo.CALIBRATION_SENTENCES)],
                   "kiln openvino int8": common + ["--target", "openvino", "--precision", "int8", "--calibration",
                                                   str(zoo.CALIBRATION_SENTENCES)],
                   "kiln openvino int8-weights": common + ["--target", "openvino", "--precision", "int8-weights"]},
        bench_feed=feeds[0], torch_feed={k: torch.from_numpy(v) for k, v in feeds[0].items()}, per_round=30,
        torch_variants=torch_variants, peer_sessions=peers, describe_kiln=describe)


# -- EfficientNet-Lite0 --------------------------------------------------------------------------------------

def efficientnet(work: Path) -> ModelSpec:
    import torch
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model, eval_dir, cal_dir, evals, cals, reference, confident = zoo.efficientnet_data(work)

    def agreement(run: Callable) -> str:
        out = np.concatenate([run({"images": x})[0] for x in evals])
        agree = out.argmax(1) == reference.argmax(1)
        return f"top-1 agree {agree.mean() * 100:.1f} % (confident {agree[confident].mean() * 100:.0f} %)"

    plain = work / "plain.onnx"
    torch.onnx.export(model, (torch.from_numpy(evals[0]),), str(plain), dynamo=False, input_names=["images"],
                      output_names=["logits"], opset_version=17, dynamic_axes={"images": {0: "batch"}})
    prepared = work / "prepared.onnx"
    quant_pre_process(str(plain), str(prepared))

    class Reader:
        def __init__(self):
            self.items = iter([{"images": x} for x in cals])

        def get_next(self):
            return next(self.items, None)

    def peers() -> dict:
        out = {"ORT fp32, plain export": ort_session(plain)}
        recipes = {"U8S8 per-channel": (QuantType.QUInt8, True), "S8S8 per-channel": (QuantType.QInt8, True),
                   "U8S8 per-tensor": (QuantType.QUInt8, False)}
        for label, (activation, per_channel) in recipes.items():
            q = work / f"static_{label.replace(' ', '_')}.onnx"
            quantize_static(str(prepared), str(q), Reader(), quant_format=QuantFormat.QDQ, activation_type=activation,
                            weight_type=QuantType.QInt8, per_channel=per_channel, calibrate_method=CalibrationMethod.MinMax)
            out[f"ORT int8 static QDQ MinMax, {label}"] = ort_session(q)
        runs = {k: _runner(s) for k, s in out.items()}
        runs.update(openvino_peers(plain, [{"images": x} for x in cals]))
        return {k: (run, agreement(run)) for k, run in runs.items()}

    def torch_variants() -> dict:
        def eager(feed):
            with torch.inference_mode():
                return model(feed)

        return {"torch eager fp32": eager}

    def describe(report: dict) -> str:
        m = report["accuracy"]["outputs"]["output"]
        return (f"top-1 agree {m['top1_agreement'] * 100:.1f} % "
                f"(confident {m['top1_agreement_confident'] * 100:.0f} %)" + _runs_in(report))

    common = ["benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--eval", str(eval_dir)]
    return ModelSpec(
        baseline="torch eager fp32",
        kiln_runs={"kiln fp32": common,
                   "kiln int8": common + ["--precision", "int8", "--calibration", str(cal_dir)],
                   "kiln openvino fp32": common + ["--target", "openvino"],
                   "kiln openvino int8": common + ["--target", "openvino", "--precision", "int8", "--calibration",
                                                   str(cal_dir)]},
        bench_feed={"images": evals[0]}, torch_feed=torch.from_numpy(evals[0]), per_round=50,
        torch_variants=torch_variants, peer_sessions=peers, describe_kiln=describe)


MODELS = {"minilm": minilm, "efficientnet": efficientnet}
