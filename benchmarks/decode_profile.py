"""Where a decoded token's time goes: kiln's ONNX Runtime int4 artifact against the GGUF Q4_K_M, sampled by perf.

    .venv/bin/python -m benchmarks.decode_profile [--work DIR] [--seconds 10]

Each runtime decodes in a process of its own, in kiln's greedy loop (prompt 128 tokens, then one token at a time,
the loop restarted every 128 tokens), at 2 threads, under `perf record -F 999` (every thread, user and kernel).
The samples are grouped by what the function does: the quantized matrix products, attention, the rest of the
layer (norms, activations, residual adds), the Python loop and the logits copy, thread synchronisation (spinning
and waking), and the rest. Time per token is the process's measured decode time divided among the groups by
their sample shares; samples of all threads are counted, so a group's share is of CPU time, not of wall time.
Needs `perf` (linux-perf) and permission to sample (root, or kernel.perf_event_paranoid <= 1).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import zoo

THREADS, PROMPT, NEW = 2, 128, 128
# (group, pattern over "shared object symbol"), first match wins; the order matters (a GEMV kernel's name may
# contain "Mul", a ggml op is named ggml_compute_forward_*)
GROUPS = [
    ("quantized matmul", r"SQNBit|SQ4Bit|Q4Bit|QNBit|MatMulNBits|MlasQ|Q8Blk|QuantizeARow|ggml_vec_dot|gemv|gemm|"
                         r"quantize_row_q8|mul_mat|repack|MlasGemm|MlasSgemm|kernel_"),
    ("attention", r"Attention|flash_attn|soft_max|softmax|rope|Rotary|kv_cache|llama_kv|cpy_f32_f16|fp16_to_fp32"),
    ("norm, activation, add", r"Norm|norm|silu|Sigmoid|swiglu|Logistic|Elementwise|ggml_compute_forward_(add|mul)|"
                              r"ggml_vec_(add|mul|scale)|Add|Mul"),
    ("logits copy, Python", r"python3|libpython|numpy|_multiarray|memcpy|memmove|argmax|__memset|ctypes"),
    ("threads: spin, wait", r"spin|Spin|ThreadPool|barrier|sched_yield|futex|pthread|__lll|ggml_graph_compute_thread|"
                            r"WaitForWork|omp_|do_syscall|\[kernel"),
]


def child(runtime: str, path: Path, seconds: float) -> None:
    """Decode until `seconds` have passed; print tokens and decode seconds as JSON."""
    from benchmarks.gguf import text_windows
    from kiln.llm.runners import generate

    if runtime == "gguf":
        from kiln.llamacpp.decoder import LlamaCppDecoder
        from kiln.llamacpp.toolchain import find

        decoder = LlamaCppDecoder(find(), path, THREADS, n_ctx=PROMPT + NEW + 8)
        tokenizer_folder = zoo.smollm2_folder(path.parent.parent)
    else:
        from benchmarks.llm import decoder as artifact_decoder

        decoder = artifact_decoder(path)
        tokenizer_folder = path / "tokenizer"
    from transformers import AutoTokenizer

    prompt = text_windows(AutoTokenizer.from_pretrained(str(tokenizer_folder)), 1)[0][:PROMPT]
    generate(decoder, prompt, 8)
    tokens, decode_s, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        result = generate(decoder, prompt, NEW)
        tokens += len(result.step_s)
        decode_s += sum(result.step_s)
    ops = ort_op_shares(decoder, path, prompt) if runtime == "onnxruntime" else None
    print(json.dumps({"tokens": tokens, "decode_s": decode_s, "ort_ops": ops}))


def ort_op_shares(decoder, path: Path, prompt: np.ndarray) -> dict[str, float]:
    """ONNX Runtime's own per-node profile of 64 decoding steps (the prompt pass left out): percent of kernel time
    by op type. Its wheel is stripped, so perf sees only addresses inside it."""
    from kiln.backends.onnxruntime.session import make_session
    from kiln.llm.runners import generate

    runtime = json.loads((path / "runtime.json").read_text())
    decoder.session = make_session(path / runtime["model"], runtime["settings"],
                                   profile_prefix=str(Path(tempfile.mkdtemp()) / "ort"))
    decoder.length = 0
    decoder.reset()  # binds the cache buffers to the profiled session
    generate(decoder, prompt, 65)
    events = json.loads(Path(decoder.session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    prompt_end = runs[0][1] if runs else 0
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > prompt_end:
            op = e["args"].get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + e["dur"]
    whole = sum(totals.values()) or 1.0
    return {op: 100 * t / whole for op, t in sorted(totals.items(), key=lambda kv: -kv[1])}


def samples(perf_data: Path) -> list[tuple[float, str]]:
    """(percent, "object symbol") of every line perf report gives."""
    report = subprocess.run(["perf", "report", "-i", str(perf_data), "--stdio", "--no-children", "--sort", "dso,sym",
                             "-q", "--percent-limit", "0.05"], capture_output=True, text=True, check=True).stdout
    rows = []
    for line in report.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[[.k]\]\s+(.*)", line)
        if match:
            rows.append((float(match.group(1)), f"{match.group(2)} {match.group(3).strip()}"))
    return rows


def group(rows: list[tuple[float, str]]) -> tuple[dict[str, float], dict[str, list[tuple[float, str]]]]:
    shares: dict[str, float] = {name: 0.0 for name, _ in GROUPS} | {"other": 0.0}
    top: dict[str, list[tuple[float, str]]] = {name: [] for name in shares}
    for percent, what in rows:
        name = next((g for g, pattern in GROUPS if re.search(pattern, what)), "other")
        shares[name] += percent
        top[name].append((percent, what))
    return shares, top


def profile(runtime: str, path: Path, seconds: float, scratch: Path) -> dict:
    data = scratch / f"{runtime}.perf"
    command = ["perf", "record", "-F", "999", "-o", str(data), "--", sys.executable, "-m", "benchmarks.decode_profile",
               "--child", runtime, str(path), "--seconds", str(seconds)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=zoo.REPO)
    if result.returncode:
        raise SystemExit(f"perf record failed: {result.stderr.strip().splitlines()[-1:]}")
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    shares, top = group(samples(data))
    return {"tokens": measured["tokens"], "ms_per_token": 1000 * measured["decode_s"] / measured["tokens"],
            "shares": shares, "top": {k: sorted(v, reverse=True)[:4] for k, v in top.items()},
            "ort_ops": measured["ort_ops"]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="keep exports here between runs (default: a temporary folder)")
    parser.add_argument("--seconds", type=float, default=10.0, help="decoding time sampled per runtime")
    parser.add_argument("--child", nargs=2, metavar=("RUNTIME", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args.child[0], Path(args.child[1]), args.seconds)
    if shutil.which("perf") is None:
        raise SystemExit("needs perf (apt-get install linux-perf)")
    with tempfile.TemporaryDirectory() as scratch:
        run(args.work or Path(scratch), args.seconds, Path(scratch))


def run(work: Path, seconds: float, scratch: Path) -> None:
    from benchmarks.gguf import kiln_export
    from kiln.targets import detect_host

    folder = zoo.smollm2_folder(work)
    kiln_export(folder, work / "kiln-q4_k_m+imatrix", "llama.cpp", "q4_k_m", True)
    kiln_export(folder, work / "kiln-onnxruntime-int4-rtn", "onnxruntime", "int4-weights", False)
    runs = {"ONNX Runtime int4 (MatMulNBits)": profile("onnxruntime", work / "kiln-onnxruntime-int4-rtn", seconds,
                                                       scratch),
            "llama.cpp GGUF Q4_K_M+imatrix": profile("gguf", work / "kiln-q4_k_m+imatrix" / "model.gguf", seconds,
                                                     scratch)}
    cpu = detect_host().fingerprint()["cpu_model"]
    names = list(next(iter(runs.values()))["shares"])
    print(f"SmolLM2-135M-Instruct on {cpu}, {THREADS} threads, kiln's greedy loop, perf at 999 Hz for {seconds:.0f} s "
          "each. Per-token ms = measured decode ms x the group's share of CPU samples.\n")
    print("| group | " + " | ".join(f"{k}: share / ms per token" for k in runs) + " |")
    print("|---|" + "---|" * len(runs))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r['shares'][name]:.1f} % / {r['shares'][name] / 100 * r['ms_per_token']:.2f}"
                                          for r in runs.values()) + " |")
    print("| **decode ms per token (tokens/s)** | " + " | ".join(
        f"{r['ms_per_token']:.2f} ({1000 / r['ms_per_token']:.0f})" for r in runs.values()) + " |")
    for key, r in runs.items():
        print(f"\n{key}, top functions per group:")
        for name, rows in r["top"].items():
            if rows:
                print(f"- {name}: " + "; ".join(f"{p:.1f} % {w[:90]}" for p, w in rows))
    for key, r in runs.items():
        if r["ort_ops"]:
            print(f"\n{key}, ONNX Runtime's own profile of 64 decoding steps, share of kernel time by op: "
                  + ", ".join(f"{op} {share:.1f} %" for op, share in list(r["ort_ops"].items())[:8]))
    print("\n" + json.dumps({k: {kk: vv for kk, vv in v.items() if kk != "top"} for k, v in runs.items()}))


if __name__ == "__main__":
    main()
