"""TensorRT-RTX engine builds on this machine (no GPU): build time per compute capability, engine size, and
the second build with the timing cache in place.

    .venv/bin/python -m benchmarks.tensorrt_build
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from benchmarks import zoo
from benchmarks.run import kiln_export


def main() -> int:
    from kiln.backends.tensorrt.build_engine import build

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        images = zoo.sample_images(work / "images", "calibration")
        models = {
            "EfficientNet-Lite0": ["benchmarks.zoo:efficientnet_lite0", *zoo.EFFICIENTNET_CLI, "--calibration",
                                   str(images)],
            "MiniLM": [str(zoo.minilm_path()), "--calibration", str(zoo.CALIBRATION_SENTENCES), "--eval-limit", "20",
                       "--calibration-limit", "100"],
        }
        print("| model | graph | SM | build 1 s | build 2 s (timing cache present) | engine MiB |")
        print("|---|---|---|---|---|---|")
        for name, args in models.items():
            for precision in ("fp16", "int8"):
                out = work / f"{name}-{precision}"
                kiln_export(out, [*args, "--target", "tensorrt-rtx", "--precision", precision, "--no-bench",
                                  "--compute-capability", "8.9"])
                kit = out / "tensorrt"
                for cc in ("8.9", "12.0"):
                    first = build(kit, work / "engines", "tensorrt_rtx", [cc])["engines"][0]
                    second = build(kit, work / "engines", "tensorrt_rtx", [cc])["engines"][0]
                    print(f"| {name} | {precision} | {cc} | {first['build_seconds']:.2f} | "
                          f"{second['build_seconds']:.2f} | {first['bytes'] / 2**20:.1f} |")
                settings = json.loads((kit / "build.json").read_text())
                assert settings["precision"] == precision
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
