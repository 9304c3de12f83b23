"""Language models, measured: decode tokens/s and time to first token against torch eager, weight bytes, fidelity;
and the peak memory of exporting a ~1B-parameter model.

    .venv/bin/python -m benchmarks.llm [--rounds 3] [--memory] [--memory-target llama.cpp:q4_k_m]

1. SmolLM2-135M-Instruct (real weights, zoo.smollm2_folder): `kiln export` to onnxruntime and openvino in fp32,
   int8-weights and int4-weights (each export measures fidelity against torch). Then, in this one process,
   batch 1, prompt 128 tokens, 128 new tokens, greedy, 2 threads: torch eager fp32 with its own DynamicCache and
   every artifact, rounds interleaved; the table gives the median decode tokens/s and TTFT and the ratios. The
   peer recipe runs in the same rounds: onnxruntime-genai's builder int4 model with its own generator.
2. With --memory: a random-initialised Llama of ~1.1 B parameters (TinyLlama's shape) exported to onnxruntime
   int4-weights (or --memory-target, e.g. llama.cpp:q4_k_m) by `kiln export` in a child process; its peak
   resident memory (the process tree's, sampled every 0.1 s: the model builder, or llama.cpp's converter and
   tools, run in grandchildren) against its fp32 weight bytes. The issue's bound: 3x.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import zoo

PROMPT, NEW, THREADS = 128, 128, 2
VARIANTS = [("onnxruntime", "fp32"), ("onnxruntime", "int8-weights"), ("onnxruntime", "int4-weights"),
            ("openvino", "fp32"), ("openvino", "int8-weights"), ("openvino", "int4-weights")]


def export(source: Path, out: Path, target: str, precision: str) -> dict:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "kiln.cli", "export", str(source), "--out", str(out), "--target",
                             target, "--precision", precision, "--eval", str(zoo.EVAL_SENTENCES), "--no-bench",
                             "--threads", str(THREADS), "--quiet", "--json"], capture_output=True, text=True,
                            cwd=zoo.REPO)
    if result.returncode:
        raise SystemExit(f"kiln export failed: {result.stderr}")
    report = json.loads(result.stdout)
    report["_wall_s"] = time.perf_counter() - start
    return report


def decoder(out: Path):
    from kiln.llm.runners import OpenVinoDecoder, OrtDecoder

    runtime = json.loads((out / "runtime.json").read_text())
    if runtime["backend"] == "onnxruntime":
        return OrtDecoder(out / runtime["model"], runtime["settings"], runtime["language_model"])
    return OpenVinoDecoder(out / runtime["model"], runtime["settings"])


PEER = ("onnxruntime-genai (its builder's int4 + its own generator)", "int4")


def peer_model(source: Path, out: Path) -> Path:
    """The hand-tuned recipe kiln's ONNX Runtime artifact is compared with: onnxruntime-genai's model builder at
    its CPU int4 defaults (block 32, accuracy level 4, LM head and tied embedding int4), run by its own generator
    (KV cache in one preallocated buffer shared by past and present), with 2 intra-op threads."""
    if not (out / "model.onnx").is_file():
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
                        "-p", "int4", "-e", "cpu", "-c", str(out / "cache"), "--extra_options", "hf_token=false"],
                       check=True, capture_output=True)
    config = json.loads((out / "genai_config.json").read_text())
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = THREADS
    config["model"]["decoder"]["session_options"]["inter_op_num_threads"] = 1
    (out / "genai_config.json").write_text(json.dumps(config, indent=2))
    return out


def peer_generate(model, prompt: np.ndarray, new_tokens: int):
    """Greedy generation with onnxruntime_genai's Generator, timed like kiln.llm.runners.generate."""
    import onnxruntime_genai as og

    from kiln.llm.runners import Generation

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, max_length=len(prompt) + new_tokens, batch_size=1)
    generator = og.Generator(model, params)
    start = time.perf_counter()
    generator.append_tokens(prompt[None].astype(np.int32))
    generator.generate_next_token()  # the prompt's logits -> the first token
    result = Generation([int(generator.get_next_tokens()[0])], time.perf_counter() - start)
    for _ in range(new_tokens - 1):
        start = time.perf_counter()
        generator.generate_next_token()
        result.tokens.append(int(generator.get_next_tokens()[0]))
        result.step_s.append(time.perf_counter() - start)
    return result


def speed_table(work: Path, rounds: int) -> None:
    import torch  # noqa: F401  (loaded before the timed runs)

    from kiln.llm.runners import TorchDecoder, generate
    from kiln.llm.source import load_model

    folder = zoo.smollm2_folder(work)
    reports = {v: export(folder, work / f"{v[0]}-{v[1]}", *v) for v in VARIANTS}
    model, tokenizer = load_model(folder, False)
    lines = [line.strip() for line in zoo.EVAL_SENTENCES.read_text().splitlines() if line.strip()]
    stream = np.concatenate([np.asarray(tokenizer(line)["input_ids"], dtype=np.int64) for line in lines])
    prompt = stream[:PROMPT]
    runners = {("torch eager", "fp32"): TorchDecoder(model, THREADS)}
    runners.update({v: decoder(work / f"{v[0]}-{v[1]}") for v in VARIANTS})
    import onnxruntime_genai as og

    peer_dir = peer_model(folder, work / "genai-int4")
    peer = og.Model(str(peer_dir))
    for runner in runners.values():  # warm-up
        generate(runner, prompt, 8)
    peer_generate(peer, prompt, 8)
    results = {k: [] for k in [*runners, PEER]}
    for _ in range(rounds):
        for key, runner in runners.items():
            results[key].append(generate(runner, prompt, NEW))
        results[PEER].append(peer_generate(peer, prompt, NEW))
    base = statistics.median(g.tokens_per_s for g in results[("torch eager", "fp32")])
    base_ttft = statistics.median(g.ttft_s for g in results[("torch eager", "fp32")])
    fp32_bytes = reports[VARIANTS[0]]["weights"]["fp32_bytes"]
    print(f"SmolLM2-135M-Instruct, batch 1, prompt {PROMPT}, {NEW} new tokens, {THREADS} threads, {rounds} rounds "
          f"interleaved (median)\n")
    print("| runtime | precision | decode tokens/s (each round) | vs torch | TTFT ms | vs torch | weights MiB | "
          "of fp32 | greedy agreement | next-token KL | perplexity (torch → artifact) | export s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for key, gens in results.items():
        tps = statistics.median(g.tokens_per_s for g in gens)
        ttft = statistics.median(g.ttft_s for g in gens)
        each = ", ".join(f"{g.tokens_per_s:.1f}" for g in gens)
        if key in reports:
            r = reports[key]
            f, w = r["fidelity"], r["weights"]
            tail = (f"{w['bytes'] / 2**20:.1f} | {w['ratio_to_fp32']:.1%} | {f['greedy_agreement']:.1%} | "
                    f"{f['next_token_kl_mean']:.4f} | {f['perplexity_source']:.2f} → {f['perplexity']:.2f} | "
                    f"{r['_wall_s']:.0f} |")
        elif key == PEER:
            peer_bytes = sum(p.stat().st_size for p in peer_dir.glob("model.onnx*"))
            same = np.mean([a == b for a, b in zip(gens[0].tokens, results[("onnxruntime", "int4-weights")][0].tokens)])
            tail = (f"{peer_bytes / 2**20:.1f} | {peer_bytes / fp32_bytes:.1%} | (same tokens as kiln's int4: "
                    f"{same:.0%}) | – | – | – |")
        else:
            tail = f"{fp32_bytes / 2**20:.1f} | 100% | – | – | – | – |"
        print(f"| {key[0]} | {key[1]} | {tps:.1f} ({each}) | {tps / base:.2f}x | {ttft * 1000:.1f} | "
              f"{base_ttft / ttft:.2f}x | {tail}")


def tree_rss(root: int) -> int:
    """Resident bytes of a process and all its descendants now (Linux /proc), sampled by the caller."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            status = (entry / "status").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
        rss[int(entry.name)] = next((int(line.split()[1]) * 1024 for line in status.splitlines()
                                     if line.startswith("VmRSS:")), 0)
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return total


def memory(work: Path, target: str = "onnxruntime", precision: str = "int4-weights") -> None:
    import torch
    import transformers

    folder = work / "llama-1b"
    if not (folder / "model.safetensors").is_file() and not list(folder.glob("*.safetensors")):
        smol = zoo.smollm2_folder(work)
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(smol))
        config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=2048, intermediate_size=5632,
                                          num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                                          max_position_embeddings=2048, tie_word_embeddings=False)
        torch.manual_seed(0)
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.save_pretrained(folder, max_shard_size="20GB")
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).write_bytes((smol / name).read_bytes())
        del model
    out = work / f"llama-1b-{target}-{precision}"
    command = [sys.executable, "-m", "kiln.cli", "export", str(folder), "--out", str(out), "--target", target,
               "--precision", precision, "--eval", str(zoo.EVAL_SENTENCES), "--no-bench", "--prompts", "2", "--quiet", "--json"]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, text=True, cwd=zoo.REPO)
        peak = 0
        while process.poll() is None:  # the whole tree: the model builder runs in a child process
            peak = max(peak, tree_rss(process.pid))
            time.sleep(0.1)
        wall = time.perf_counter() - start
        stdout.seek(0), stderr.seek(0)
        result = subprocess.CompletedProcess(command, process.returncode, stdout.read(), stderr.read())
    if result.returncode:
        raise SystemExit(f"kiln export failed: {result.stderr}")
    peak = max(peak, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
    report = json.loads(result.stdout)
    fp32 = report["weights"]["fp32_bytes"]
    print("\n| model | target, precision | parameters | fp32 weights GiB | export peak RSS GiB (process tree) | "
          "peak / fp32 | weights | of fp32 | export s | stages s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    stages = ", ".join(f"{k} {v:.0f}" for k, v in report["stages_seconds"].items())
    print(f"| random Llama (TinyLlama shape) | {target}, {precision} | {report['model']['parameters'] / 1e9:.2f} B | "
          f"{fp32 / 2**30:.2f} | "
          f"{peak / 2**30:.2f} | {peak / fp32:.2f}x | {report['weights']['bytes'] / 2**30:.2f} GiB | "
          f"{report['weights']['ratio_to_fp32']:.1%} | {wall:.0f} | {stages} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory", action="store_true", help="also the ~1B-parameter export's peak memory")
    parser.add_argument("--memory-only", action="store_true", help="only the ~1B-parameter export's peak memory")
    parser.add_argument("--memory-target", default="onnxruntime:int4-weights", metavar="TARGET:PRECISION",
                        help="what the ~1B-parameter export is measured for (e.g. llama.cpp:q4_k_m)")
    parser.add_argument("--work", type=Path, help="keep models and artifacts here (default: a temporary folder)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if not args.memory_only:
            speed_table(work, args.rounds)
        if args.memory or args.memory_only:
            memory(work, *args.memory_target.split(":", 1))


if __name__ == "__main__":
    main()
