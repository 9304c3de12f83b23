"""The stage cache, measured: a cold export, an unchanged rebuild, and rebuilds with one setting changed.

    .venv/bin/python -m benchmarks.cache_rebuild [--rounds 3]

MiniLM (the README's demo command: int8-dynamic with calibration and eval sentences and a gate) in a fresh
KILN_CACHE_DIR, wall time of the whole `kiln export` process as a build script sees it. The issue's target:
an unchanged rebuild under 2 s. Also: the same with --no-cache (every tool reruns), a changed gate
(validate only), changed bench runs (bench and the analysis), and another precision (compile onwards).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from benchmarks import zoo
from benchmarks.run import kiln_export

DEMO = ["--target", "onnxruntime", "--precision", "int8-dynamic", "--calibration", str(zoo.CALIBRATION_SENTENCES),
        "--eval", str(zoo.EVAL_SENTENCES), "--min-cosine", "0.99"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        os.environ["KILN_CACHE_DIR"] = str(work / "cache")  # fresh: host peaks and stages measured once here
        source = str(zoo.minilm_path())
        cold = kiln_export(work / "cold", [source, *DEMO])
        rows = [("cold (fresh cache)", [cold["_wall_seconds"]], cold["cache"]["stages"])]
        cases = {
            "unchanged rebuild": [],
            "--min-cosine 0.98 (validate recomputed)": ["--min-cosine", "0.98"],
            "--runs 60 (bench, baseline, analyse recomputed)": ["--runs", "60"],
            "--no-cache (every tool reruns)": ["--no-cache"],
        }
        for name, extra in cases.items():
            walls, stages = [], None
            for r in range(args.rounds if name == "unchanged rebuild" else 1):
                demo = [a for a in DEMO if a not in ("--min-cosine", "0.99")] + (
                    [] if "--min-cosine" in extra else ["--min-cosine", "0.99"])
                report = kiln_export(work / f"{name[:8].strip('-')}-{r}".replace(" ", "_"), [source, *demo, *extra])
                walls.append(report["_wall_seconds"])
                stages = report["cache"]["stages"]
            rows.append((name, walls, stages))
        print("| MiniLM int8-dynamic, whole `kiln export` | wall s (each round) | median | stages (hit/miss/off) |")
        print("|---|---|---|---|")
        for name, walls, stages in rows:
            text = ", ".join(f"{k} {v}" for k, v in stages.items())
            print(f"| {name} | {', '.join(f'{w:.2f}' for w in walls)} | {statistics.median(walls):.2f} | {text} |")


if __name__ == "__main__":
    main()
