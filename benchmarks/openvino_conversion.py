"""Which route into OpenVINO gives the faster model: the ONNX graph kiln exports, or OpenVINO's direct
PyTorch conversion (`ov.convert_model(module, example_input=...)`, which OpenVINO's docs recommend)?

Both IRs run f32 (explicit hint), LATENCY hint, 2 threads, batch 1, the same input, rounds interleaved;
int8 rows quantize each IR with the same nncf.quantize settings kiln uses.

    .venv/bin/python -m benchmarks.openvino_conversion [--rounds 7]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import zoo
from benchmarks.run import THREADS, kiln_export, time_interleaved

CONFIG = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": str(THREADS)}


def _request(model):
    import openvino as ov

    request = ov.Core().compile_model(model, "CPU", CONFIG).create_infer_request()
    return lambda feed: request.infer(feed)


def _int8(model, calibration: list[dict], transformer: bool):
    import nncf
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedSmoothQuantParameters

    kwargs = ({"model_type": nncf.ModelType.TRANSFORMER, "advanced_parameters": AdvancedQuantizationParameters(
        smooth_quant_alphas=AdvancedSmoothQuantParameters(matmul=0.8))} if transformer
        else {"fast_bias_correction": False})
    return nncf.quantize(model, nncf.Dataset(calibration), subset_size=len(calibration), **kwargs)


def minilm(work: Path) -> tuple[dict, dict]:
    import openvino as ov
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = zoo.minilm_path()
    tokenizer = AutoTokenizer.from_pretrained(str(path))

    def encode(text: str) -> dict:
        enc = tokenizer([text], padding="max_length", truncation=True, max_length=128, return_tensors="np")
        return {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}

    feed = encode(zoo.EVAL_SENTENCES.read_text().splitlines()[0])
    calibration = [encode(s) for s in zoo.CALIBRATION_SENTENCES.read_text().splitlines()[:100]]
    kiln_export(work / "minilm", [str(path), "--target", "openvino", "--no-bench", "--eval-limit", "20",
                                  "--eval", str(zoo.EVAL_SENTENCES)])
    via_onnx = ov.Core().read_model(str(work / "minilm" / "openvino" / "model.xml"))
    module = AutoModel.from_pretrained(str(path)).eval()  # default (sdpa) attention, as OpenVINO's docs load it
    direct = ov.convert_model(module, example_input={k: torch.from_numpy(v) for k, v in feed.items()})
    models = {"MiniLM fp32, via kiln's ONNX": via_onnx, "MiniLM fp32, direct from PyTorch": direct,
              "MiniLM int8, via kiln's ONNX": _int8(via_onnx, calibration, True),
              "MiniLM int8, direct from PyTorch": _int8(direct, calibration, True)}
    return models, feed


def efficientnet(work: Path) -> tuple[dict, dict]:
    import openvino as ov
    import torch

    kiln_export(work / "effnet", ["benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--target", "openvino",
                                  "--no-bench", "--synthetic-data"])
    via_onnx = ov.Core().read_model(str(work / "effnet" / "openvino" / "model.xml"))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    direct = ov.convert_model(zoo.efficientnet_lite0(), example_input=torch.from_numpy(x))
    calibration = [np.random.default_rng(i).standard_normal((1, 3, 224, 224)).astype(np.float32) for i in range(32)]
    models = {"EfficientNet-Lite0 fp32, via kiln's ONNX": via_onnx,
              "EfficientNet-Lite0 fp32, direct from PyTorch": direct,
              "EfficientNet-Lite0 int8, via kiln's ONNX": _int8(via_onnx, [{"images": c} for c in calibration], False),
              "EfficientNet-Lite0 int8, direct from PyTorch": _int8(direct, [{0: c} for c in calibration], False)}
    return models, {"images": x}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    print("| model | p50 ms | p99 ms | direct / ONNX route |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for build in (minilm, efficientnet):
            models, feed = build(Path(tmp))
            runs = {k: _request(m) for k, m in models.items()}
            feeds = {k: (feed if "via" in k else list(feed.values())) for k in runs}
            times = time_interleaved(runs, feeds, args.rounds, 30)
            for name, t in times.items():
                pair = name.replace("direct from PyTorch", "via kiln's ONNX")
                ratio = "" if "via" in name else f"{np.median(t) / np.median(times[pair]):.2f}"
                print(f"| {name} | {np.median(t):.2f} | {np.percentile(t, 99):.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
