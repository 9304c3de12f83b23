"""The llama.cpp target's export and compile stages, and llama.cpp's own speed measurement.

export: the Hugging Face folder to a float GGUF master (f32, or f16/bf16 when that is the precision) by llama.cpp's
converter, checked against the torch model at a prompt and a decoding step, run by libllama itself.
compile: the master quantized by llama-quantize (with an importance matrix from --calibration text for the k-quants);
a float precision ships the master.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from kiln.errors import ExportError
from kiln.llamacpp.convert import convert, inspect
from kiln.llamacpp.decoder import LlamaCppDecoder
from kiln.llamacpp.quantize import GGUF_TYPES, USES_IMATRIX, importance_matrix, quantize
from kiln.llamacpp.toolchain import LlamaCpp

EXPORTER = "llama.cpp convert_hf_to_gguf"
FLOAT = ("fp32", "fp16", "bf16")
# The master against torch: libllama's kernels differ in summation order, measured at 4.2e-4 of the logits' scale for
# SmolLM2-135M's f32 master.
CHECK_RTOL = {"fp32": 5e-3, "fp16": 3e-2, "bf16": 6e-2}


def export_gguf(build: LlamaCpp, reference, folder: Path, out: Path, precision: str, threads: int) -> dict:
    """The float master and its parity with the torch model (`reference`, a TorchDecoder)."""
    out.mkdir(parents=True, exist_ok=True)
    master_precision = precision if precision in FLOAT else "fp32"
    master = out / f"master-{master_precision}.gguf"
    record = convert(build, folder, master, master_precision)
    decoder = LlamaCppDecoder(build, master, threads, n_ctx=64)
    try:
        checks = _parity(reference, decoder, CHECK_RTOL[master_precision])
    finally:
        del decoder
    return {"exporter": EXPORTER, "opset": None, "seconds": record["seconds"], "checks": checks,
            "attempts": [{"exporter": EXPORTER, "ok": True, "seconds": record["seconds"]}],
            "notes": [f"GGUF master {record['outtype']}: {record['tensors']} tensors, tokenizer "
                      f"{record['tokenizer']['model']}/{record['tokenizer']['pre']}"],
            "master": {k: record[k] for k in ("outtype", "architecture", "tokenizer", "tensor_types", "bytes")},
            "master_path": str(master)}


def _parity(reference, decoder, rtol: float) -> list[dict]:
    rng = np.random.default_rng(1)
    prompt = rng.integers(0, min(decoder.vocab, 32000), 16, dtype=np.int64)
    step = rng.integers(0, min(decoder.vocab, 32000), 1, dtype=np.int64)
    rows = []
    reference.reset()
    decoder.reset()
    for label, ids in (("prompt (past 0)", prompt), ("decoding step (past 16)", step)):
        want = reference.forward(ids[None])
        got = decoder.forward(ids[None])
        if want.shape != got.shape:
            raise ExportError(f"the GGUF's logits have shape {list(got.shape)} at the {label}, the torch model's "
                              f"{list(want.shape)} (vocabulary padded?)", hint="report this model to kiln")
        error = float(np.max(np.abs(want - got)) / (np.max(np.abs(want)) or 1.0))
        rows.append({"inputs": label, "worst_output": "logits", "max_rel_error": error, "ok": error <= rtol})
        if error > rtol:
            raise ExportError(f"the GGUF does not match the torch model at the {label}: logits differ by {error:.3g} "
                              f"of their scale (limit {rtol:g})", hint="report this model to kiln")
    return rows


def compile_gguf(build: LlamaCpp, master: Path, outtype: str, staged: Path, precision: str, threads: int,
                 calibration: Path | None, keep_master: bool = False, imatrix: tuple[Path, dict] | None = None) -> dict:
    """model.gguf in the staged artifact; the importance matrix (when used) ships beside it, as imatrix.gguf.
    `keep_master`: other builds quantize the same master (a comparison matrix), so copy it rather than move it;
    `imatrix`: one made earlier from the same master and text (path, record), reused."""
    target = staged / "model.gguf"
    if precision in FLOAT:
        (shutil.copyfile if keep_master else shutil.move)(master, target)
        return {"precision": precision, "tool": f"convert_hf_to_gguf ({outtype})", "seconds": 0.0,
                "gguf": inspect(target), "imatrix": None}
    made = None
    if calibration is not None and precision in USES_IMATRIX:
        if imatrix is not None:
            shutil.copyfile(imatrix[0], staged / "imatrix.gguf")
            made = {**imatrix[1], "reused": True}
        else:
            made = importance_matrix(build, master, calibration, staged / "imatrix.gguf", threads)
    details = quantize(build, master, target, precision, threads, staged / "imatrix.gguf" if made else None)
    if not keep_master:
        master.unlink()
    return {"precision": precision, "tool": f"llama-quantize {GGUF_TYPES[precision]}"
            + (" with an importance matrix" if made else ""), "seconds": details["seconds"]
            + (made["seconds"] if made and not made.get("reused") else 0.0), "gguf": details, "imatrix": made,
            "imatrix_skipped": None if made or precision not in USES_IMATRIX
            else "no --calibration text: round-to-nearest k-quants"}


def llama_bench(build: LlamaCpp, model: Path, threads: int, prompt: int, new: int, rounds: int) -> dict:
    """llama.cpp's own speed figures (`llama-bench -o json`): prompt processing and generation tokens/s."""
    out = build.run("llama-bench", ["-m", model, "-t", threads, "-p", prompt, "-n", new, "-r", rounds, "-o", "json"],
                    what="llama-bench")
    start = out.find("[")
    try:
        rows = json.loads(out[start:out.rfind("]") + 1])
    except ValueError:
        raise ExportError("llama-bench printed no JSON") from None
    result = {"tool": "llama-bench", "threads": threads, "repetitions": rounds}
    for row in rows:
        kind = "prompt" if row.get("n_prompt") else "generation"
        result[kind] = {"tokens": row.get("n_prompt") or row.get("n_gen"), "tokens_per_s": row.get("avg_ts"),
                        "tokens_per_s_stdev": row.get("stddev_ts")}
    return result
