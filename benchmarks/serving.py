"""kiln's OpenVINO language-model artifact served by openvino-genai: throughput against concurrency, in one process.

    .venv/bin/python -m benchmarks.serving [--concurrency 1,2,4,8] [--new-tokens 64] [--rounds 2] [--work DIR]

kiln exports SmolLM2-135M-Instruct (real weights) to OpenVINO int4-weights; kiln.llm.concurrency (what `kiln bench
ARTIFACT --concurrency` runs) serves N eval sentences at once through openvino-genai's ContinuousBatchingPipeline,
against the same N one at a time through the same pipeline (kiln's own loop serves one request at a time), with
the settings the artifact's report names. Prompts here are real sentences, where `kiln bench` uses random tokens.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks import zoo
from benchmarks.gguf import THREADS, kiln_export


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,2,4,8")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--work", type=Path, help="keep the export here between runs (default: a temporary folder)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        run(args.work or Path(scratch), levels, args.new_tokens, args.rounds)


def run(work: Path, levels: list[int], new_tokens: int, rounds: int) -> None:
    from tokenizers import Tokenizer

    from kiln.llm.concurrency import measure_concurrency, render_curve
    from kiln.targets import detect_host

    work.mkdir(parents=True, exist_ok=True)
    out = work / "ov-int4"
    kiln_export(zoo.smollm2_folder(work), out, "openvino", "int4-weights", False, ())
    report = json.loads((out / "report.json").read_text())
    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    lines = [line for line in zoo.EVAL_SENTENCES.read_text().splitlines() if line.strip()][:max(levels)]
    curve = measure_concurrency(out, report, levels, [tokenizer.encode(line).ids for line in lines], new_tokens,
                                THREADS, rounds)
    print(f"SmolLM2-135M-Instruct, kiln openvino int4-weights, {detect_host().fingerprint()['cpu_model']}")
    print(render_curve(curve))


if __name__ == "__main__":
    main()
