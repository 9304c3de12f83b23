"""ONNX Runtime int4 recipes for SmolLM2-135M-Instruct against the former default, in one process.

    .venv/bin/python -m benchmarks.ort_int4 [--windows 24] [--rounds 7] [--work DIR]

kiln exports SmolLM2 (real weights) to onnxruntime int4-weights four ways: symmetric round to nearest (the former
default's MatMul weights; the speed the issue's "within 10 %" is measured against), and AWQ + scale estimation from
data/calibration_sentences.txt with NNCF's int8 share at ratio 0.8, 0.75 (today's default) and 0.7; the token
embedding is int8 in all four. Every artifact is scored on the same text as
benchmarks.gguf (CPython's pydoc topics, neither calibration nor eval text: perplexity against torch, next-token KL)
and decoded in kiln's greedy loop with the rounds interleaved (decode speed on a shared VM moves by up to 30 %
between rounds, so only ratios measured in one run are compared).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks import zoo
from benchmarks.gguf import PROMPT, THREADS, kiln_export, quality, speed, text_windows
from benchmarks.llm import decoder as artifact_decoder

CALIBRATION = ("--calibration", str(zoo.CALIBRATION_SENTENCES))
RECIPES = {
    "symmetric RTN (the former default's MatMuls)": ("former", ("--symmetric",)),
    "AWQ + SE, ratio 0.8": ("awq-r080", (*CALIBRATION, "--ratio", "0.8")),
    "AWQ + SE, ratio 0.75 (default)": ("awq-default", CALIBRATION),
    "AWQ + SE, ratio 0.7": ("awq-r070", (*CALIBRATION, "--ratio", "0.7")),
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--work", type=Path, help="keep exports here between runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        run(args.work or Path(scratch), args.windows, args.rounds)


def run(work: Path, windows: int, rounds: int) -> None:
    import torch  # noqa: F401  (before any timing)

    from kiln.llm.runners import TorchDecoder
    from kiln.llm.source import load_model
    from kiln.targets import detect_host

    work.mkdir(parents=True, exist_ok=True)
    folder = zoo.smollm2_folder(work)
    reports = {name: kiln_export(folder, work / f"ort-int4-{slug}", "onnxruntime", "int4-weights", False, extra)
               for name, (slug, extra) in RECIPES.items()}
    model, tokenizer = load_model(folder, False)
    reference = TorchDecoder(model, THREADS)
    decoders = {name: artifact_decoder(work / f"ort-int4-{slug}") for name, (slug, _) in RECIPES.items()}
    found = quality(reference, decoders, text_windows(tokenizer, windows))
    timed = speed(decoders, text_windows(tokenizer, windows + 1)[-1][:PROMPT], rounds)
    base, former = found["torch"]["perplexity"], timed[next(iter(RECIPES))]["decode"]
    print(f"SmolLM2-135M-Instruct, onnxruntime int4-weights, {detect_host().fingerprint()['cpu_model']}, {THREADS} "
          f"threads; {found['torch']['tokens']} tokens of pydoc, torch perplexity {base:.3f}; {rounds} rounds.\n")
    print("| recipe | weights MiB | perplexity vs torch | KL(torch‖file) | decode t/s, median (each) | vs former |")
    print("|---|---|---|---|---|---|")
    for name in RECIPES:
        q, t = found[name], timed[name]
        print(f"| {name} | {reports[name]['weights']['bytes'] / 2**20:.1f} | {q['perplexity'] / base - 1:+.2%} | "
              f"{q['kl']:.4f} | {t['decode']:.1f} ({', '.join(map(str, t['each']))}) | {t['decode'] / former:.2f}x |")


if __name__ == "__main__":
    main()
