"""llama.cpp's GGUF types against the torch model, against llama.cpp's own recipe, and against kiln's int4 artifacts
for ONNX Runtime and OpenVINO: SmolLM2-135M-Instruct (real weights), one process, one machine.

    .venv/bin/python -m benchmarks.gguf [--windows 24] [--rounds 3] [--work DIR]

1. kiln exports SmolLM2 to `--target llama.cpp` at each precision (q4_k_m and iq4_xs also with an importance matrix
   from data/calibration_sentences.txt), and to onnxruntime and openvino int4-weights.
2. The peer: llama.cpp's own recipe on the same folder, run by hand with the same build: convert_hf_to_gguf.py
   --outtype f16, then llama-quantize Q8_0 and Q4_K_M, and Q4_K_M with llama-imatrix's matrix (its defaults) from
   the same calibration text.
3. Quality, every file on the same text: CPython's pydoc topics (English prose, neither calibration nor eval text),
   windows of 512 tokens fed as the same token ids to every runtime, every position scored. Perplexity of torch
   and of each file; next-token KL(torch || file) and top-1 agreement with torch over all positions.
4. Speed: llama-bench (prompt 128 and 128 generated tokens, 2 threads, 3 repetitions) for every GGUF; then in one
   harness (kiln's greedy loop, prompt 128, 128 new tokens, rounds interleaved) the decode tokens/s of kiln's
   ONNX Runtime and OpenVINO int4 artifacts (the former symmetric round-to-nearest default, today's asymmetric one,
   and AWQ + scale estimation from the calibration text) against GGUF Q4_K_M and Q8_0, and torch eager.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import zoo
from benchmarks.llm import decoder as artifact_decoder

THREADS, WINDOW, PROMPT, NEW = 2, 512, 128, 128
KILN_GGUF = [("fp32", False), ("fp16", False), ("q8_0", False), ("q6_k", False), ("q5_k_m", False),
             ("q4_k_m", False), ("q4_k_m", True), ("q4_0", False), ("iq4_xs", True)]
# kiln's int4 on ONNX Runtime and OpenVINO: the former default (symmetric, round to nearest; OpenVINO groups of 64),
# today's data-free default (asymmetric groups of 32), and the data-aware one (AWQ + scale estimation, 20 % int8)
KILN_INT4 = [(target, name, args) for target, former in (("onnxruntime", ["--symmetric"]),
                                                         ("openvino", ["--symmetric", "--group-size", "64"]))
             for name, args in (("int4 rtn-sym (former)", former), ("int4 rtn", []),
                                ("int4 awq", ["--calibration", str(zoo.CALIBRATION_SENTENCES)]))]
# The article's rule of thumb, against F16: Q4_K_M ~70 % smaller at ~2-3 % worse, Q8_0 ~50 % smaller, near lossless
RULE = {"q4_k_m": "~70 % smaller, ~2-3 % worse", "q8_0": "~50 % smaller, near zero"}


def kiln_export(folder: Path, out: Path, target: str, precision: str, imatrix: bool, extra: tuple = ()) -> dict:
    if (out / "report.json").is_file():
        return json.loads((out / "report.json").read_text())
    command = [sys.executable, "-m", "kiln.cli", "export", str(folder), "--out", str(out), "--target", target,
               "--precision", precision, "--eval", str(zoo.EVAL_SENTENCES), "--no-bench", "--prompts", "2",
               "--new-tokens", "8", "--threads", str(THREADS), "--quiet", "--json"]
    if imatrix:
        command += ["--calibration", str(zoo.CALIBRATION_SENTENCES)]
    command += list(extra)
    start = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=zoo.REPO)
    if result.returncode:
        raise SystemExit(f"kiln export {target} {precision} failed: {result.stderr}")
    report = json.loads(result.stdout)
    report["_wall_s"] = time.perf_counter() - start
    (out / "report.json").write_text(json.dumps(report))
    return report


def peer_recipe(build, folder: Path, work: Path) -> dict[str, Path]:
    """llama.cpp's README recipe, by hand: f16 master, then llama-quantize (and llama-imatrix at its defaults)."""
    f16 = work / "peer-f16.gguf"
    if not f16.is_file():
        subprocess.run([sys.executable, str(build.converter), str(folder), "--outfile", str(f16), "--outtype", "f16"],
                       check=True, capture_output=True)
    files = {"F16": f16}
    imatrix = work / "peer-imatrix.gguf"
    if not imatrix.is_file():
        build.run("llama-imatrix", ["-m", f16, "-f", zoo.CALIBRATION_SENTENCES, "-o", imatrix, "-t", THREADS],
                  what="peer imatrix")
    for name, kind, matrix in (("Q8_0", "Q8_0", None), ("Q4_K_M", "Q4_K_M", None), ("Q4_K_M+imatrix", "Q4_K_M", imatrix)):
        out = work / f"peer-{name}.gguf"
        if not out.is_file():
            build.run("llama-quantize", (["--imatrix", matrix] if matrix else []) + [f16, out, kind, THREADS],
                      what=f"peer {name}")
        files[name] = out
    return files


def text_windows(tokenizer, count: int) -> list[np.ndarray]:
    from pydoc_data.topics import topics

    text = "\n\n".join(topics[k] for k in sorted(topics))
    ids = np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)
    return [ids[i * WINDOW:(i + 1) * WINDOW] for i in range(count)]


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def quality(reference, decoders: dict, windows: list[np.ndarray]) -> dict:
    """Per decoder: perplexity over every scored position, mean KL(torch || it), top-1 agreement with torch."""
    sums = {k: {"nll": 0.0, "kl": 0.0, "top1": 0} for k in ["torch", *decoders]}
    count = 0
    for ids in windows:
        reference.reset()
        p = _log_softmax(reference.forward(ids[None]))[:-1]
        target = ids[1:]
        count += len(target)
        sums["torch"]["nll"] -= float(p[np.arange(len(target)), target].sum())
        top = p.argmax(axis=-1)
        for key, d in decoders.items():
            d.reset()
            q = _log_softmax(d.forward(ids[None]))[:-1]
            sums[key]["nll"] -= float(q[np.arange(len(target)), target].sum())
            sums[key]["kl"] += float((np.exp(p) * (p - q)).sum())
            sums[key]["top1"] += int((q.argmax(axis=-1) == top).sum())
    return {k: {"perplexity": float(np.exp(s["nll"] / count)), "kl": s["kl"] / count, "top1": s["top1"] / count,
                "tokens": count} for k, s in sums.items()}


def speed(runners: dict, prompt: np.ndarray, rounds: int) -> dict:
    from kiln.llm.runners import generate

    for runner in runners.values():
        generate(runner, prompt, 8)
    results = {k: [] for k in runners}
    for _ in range(rounds):
        for key, runner in runners.items():
            results[key].append(generate(runner, prompt, NEW))
    return {k: {"decode": statistics.median(g.tokens_per_s for g in gens),
                "each": [round(g.tokens_per_s, 1) for g in gens],
                "ttft_ms": statistics.median(g.ttft_s for g in gens) * 1000} for k, gens in results.items()}


def llama_bench(build, path: Path) -> dict:
    from kiln.llamacpp.stages import llama_bench as run

    return run(build, path, THREADS, PROMPT, NEW, 3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=24, help=f"text windows of {WINDOW} tokens scored")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="keep exports here between runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        run(args.work or Path(scratch), args.windows, args.rounds)


def run(work: Path, windows: int, rounds: int) -> None:
    import torch  # noqa: F401  (before any timing)

    from kiln.llamacpp.convert import inspect
    from kiln.llamacpp.decoder import LlamaCppDecoder
    from kiln.llamacpp.toolchain import build as build_llama_cpp
    from kiln.llm.runners import TorchDecoder
    from kiln.llm.source import load_model
    from kiln.targets import detect_host

    work.mkdir(parents=True, exist_ok=True)
    build = build_llama_cpp()
    folder = zoo.smollm2_folder(work)
    started = time.perf_counter()
    gguf = {}
    for precision, imatrix in KILN_GGUF:
        name = precision + ("+imatrix" if imatrix else "")
        report = kiln_export(folder, work / f"kiln-{name}", "llama.cpp", precision, imatrix)
        gguf[f"kiln {name}"] = (work / f"kiln-{name}" / "model.gguf", report)
    ints = {}
    for target, name, args in KILN_INT4:
        out = work / f"kiln-{target}-{name.split(' (')[0].replace(' ', '-')}"
        ints[f"kiln {target} {name}"] = (out, kiln_export(folder, out, target, "int4-weights", False, args))
    peer = peer_recipe(build, folder, work)
    export_s = time.perf_counter() - started
    files = {**{k: v[0] for k, v in gguf.items()}, **{f"llama.cpp {k}": v for k, v in peer.items()}}
    info = {k: inspect(p) for k, p in files.items()}
    model, tokenizer = load_model(folder, False)
    reference = TorchDecoder(model, THREADS)
    decoders = {k: LlamaCppDecoder(build, p, THREADS, n_ctx=WINDOW) for k, p in files.items()}
    decoders.update({k: artifact_decoder(v[0]) for k, v in ints.items()})
    started = time.perf_counter()
    found = quality(reference, decoders, text_windows(tokenizer, windows))
    quality_s = time.perf_counter() - started
    for d in list(decoders):
        if d not in ("kiln q4_k_m+imatrix", "kiln q8_0", *ints):
            del decoders[d]
    benches = {k: llama_bench(build, p) for k, p in files.items()}
    prompt = text_windows(tokenizer, windows + 1)[-1][:PROMPT]
    timed = speed({"torch eager fp32": reference, **decoders}, prompt, rounds)
    cpu = detect_host().fingerprint()["cpu_model"]
    f32_bytes, f16_bytes = info["kiln fp32"]["bytes"], info["llama.cpp F16"]["bytes"]
    base = found["torch"]["perplexity"]
    print(f"SmolLM2-135M-Instruct on {cpu}, {THREADS} threads; llama.cpp {build.versions()['llama_cpp_commit']}. "
          f"Quality: {found['torch']['tokens']} tokens of CPython's pydoc topics in windows of {WINDOW}, torch "
          f"perplexity {base:.3f}. Exports {export_s:.0f} s, quality {quality_s:.0f} s.\n")
    print("| file | bits/weight | MiB | vs F16 | vs F32 | perplexity | vs torch | KL(torch‖file) | top-1 = torch | "
          "llama-bench prompt t/s | generation t/s | rule of thumb |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key in [*files, *ints]:
        q = found[key]
        if key in files:
            i, b = info[key], benches[key]
            size = (f"{i['bits_per_weight']:.2f} | {i['bytes'] / 2**20:.1f} | {i['bytes'] / f16_bytes - 1:+.1%} | "
                    f"{i['bytes'] / f32_bytes - 1:+.1%}")
            speed_cells = f"{b['prompt']['tokens_per_s']:.0f} | {b['generation']['tokens_per_s']:.1f}"
        else:
            w = ints[key][1]["weights"]["bytes"]
            size = f"– | {w / 2**20:.1f} | {w / f16_bytes - 1:+.1%} | {w / f32_bytes - 1:+.1%}"
            speed_cells = "– | –"
        rule = next((text for r, text in RULE.items() if key.lower().endswith(r)), "")
        print(f"| {key} | {size} | {q['perplexity']:.3f} | {q['perplexity'] / base - 1:+.2%} | {q['kl']:.4f} | "
              f"{q['top1']:.1%} | {speed_cells} | {rule} |")
    print(f"\nDecode in kiln's greedy loop (prompt {PROMPT}, {NEW} new tokens, {rounds} rounds interleaved, median):\n")
    print("| runtime | decode tokens/s (each) | vs GGUF Q4_K_M | TTFT ms |")
    print("|---|---|---|---|")
    anchor = timed["kiln q4_k_m+imatrix"]["decode"]
    for key, t in timed.items():
        print(f"| {key} | {t['decode']:.1f} ({', '.join(map(str, t['each']))}) | {t['decode'] / anchor:.2f}x | "
              f"{t['ttft_ms']:.1f} |")
    print("\n" + json.dumps({"quality": found, "llama_bench": benches, "decode": timed, "cpu": cpu}))


if __name__ == "__main__":
    main()
