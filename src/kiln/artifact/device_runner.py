#!/usr/bin/env python3
"""Run this kiln artifact on the device: needs only numpy and its runtime (onnxruntime or openvino).

    python run.py                      # check: run sample_input.npz, compare with sample_output.npz, time it
    python run.py --input x.npz --output y.npz
    python run.py --runs 200 --threads 4

It loads the model with the runtime settings the artifact was measured with (runtime.json) and
prints one JSON line. Exit codes: 0 ok, 1 outputs differ from the recorded sample, 2 bad input,
3 runtime missing. Copied verbatim into every artifact by kiln; it imports nothing from kiln.
"""

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

def _plain_relative(name):
    """A path inside the artifact, as text: no NUL/control character, backslash, drive, '..', '.' or empty segment."""
    if not isinstance(name, str) or not name or name.startswith("/") or any(c in name for c in "\\:\x7f"):
        return False
    try:
        too_long = len(name.encode("utf-8")) > 4096
    except UnicodeEncodeError:  # a lone surrogate: no filesystem call could take it
        return False
    return not too_long and not any(ord(c) < 32 for c in name) and all(
        part not in ("", ".", "..") and len(part.encode("utf-8")) <= 255 for part in name.split("/"))


def read_runtime(script):
    """runtime.json with its model path checked as text before any filesystem call; exit 2 with one line if not."""
    try:
        runtime = json.loads((HERE / "runtime.json").read_text(encoding="utf-8"))
        ok = isinstance(runtime, dict) and _plain_relative(runtime.get("model")) and "backend" in runtime
    except (OSError, ValueError, RecursionError) as exc:
        print(f"{script}: cannot read runtime.json ({ascii(str(exc))[1:-1][:160]}); export the artifact again",
              file=sys.stderr)
        raise SystemExit(2) from None
    if not ok:
        model = runtime.get("model") if isinstance(runtime, dict) else None
        print(f"{script}: runtime.json has no backend or its model {ascii(model)[:120]} is not a relative path "
              f"inside the artifact; export the artifact again", file=sys.stderr)
        raise SystemExit(2)
    return runtime


def _ort_session(model, settings, threads):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or settings.get("intra_op_num_threads", 0))
    options.inter_op_num_threads = int(settings.get("inter_op_num_threads", 0))
    if settings.get("execution_mode") == "parallel":
        options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               settings.get("graph_optimization_level", "ORT_ENABLE_ALL"))
    for key, value in settings.get("config_entries", {}).items():
        options.add_session_config_entry(key, str(value))
    session = ort.InferenceSession(str(model), options, providers=settings.get("providers", ["CPUExecutionProvider"]),
                                   disabled_optimizers=list(settings.get("disabled_optimizers", [])))
    outputs = [o.name for o in session.get_outputs()]
    inputs = [i.name for i in session.get_inputs()]
    return lambda feed: dict(zip(outputs, session.run(outputs, {k: feed[k] for k in inputs})))


def _openvino_model(model, settings, threads):
    import openvino as ov

    config = dict(settings.get("config", {}))
    if threads:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if settings.get("cache_dir"):
        config["CACHE_DIR"] = str(model.parent / settings["cache_dir"])
    core = ov.Core()
    # output names as the IR has them: compiling can fold nodes into an output and add their names to its port
    names = [o.get_any_name() for o in core.read_model(str(model)).outputs]
    compiled = core.compile_model(str(model), settings.get("device", "CPU"), config)
    request = compiled.create_infer_request()

    def infer(feed):
        result = request.infer({k: v for k, v in feed.items()})
        return {name: result[compiled.outputs[i]] for i, name in enumerate(names)}

    return infer


def load(threads=None):
    runtime = read_runtime("run.py")
    model = HERE / runtime["model"]
    if runtime["backend"] == "onnxruntime":
        return runtime, _ort_session(model, runtime["settings"], threads)
    if runtime["backend"] == "openvino":
        return runtime, _openvino_model(model, runtime["settings"], threads)
    raise SystemExit(f"run.py: backend '{runtime['backend']}' runs through its build kit "
                     f"(see tensorrt/README.md), not this script")


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, default=HERE / "sample_input.npz")
    parser.add_argument("--output", type=Path, help="write the outputs here (.npz)")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--rtol", type=float, default=1e-3, help="check against sample_output.npz: relative tolerance")
    args = parser.parse_args(argv)
    try:
        with np.load(args.input) as data:
            feed = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        print(f"run.py: cannot read {args.input}: {exc}", file=sys.stderr)
        return 2
    try:
        runtime, infer = load(args.threads)
    except ImportError as exc:
        print(f"run.py: the runtime is not installed ({exc}); pip install onnxruntime or openvino", file=sys.stderr)
        return 3
    outputs = infer(feed)
    times = []
    for _ in range(max(args.runs, 1)):
        start = time.perf_counter()
        infer(feed)
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    line = {"backend": runtime["backend"], "runs": len(times), "p50_ms": times[len(times) // 2],
            "outputs": {k: list(v.shape) for k, v in outputs.items()}}
    if args.output:
        np.savez(args.output, **outputs)
    code = 0
    if args.input == HERE / "sample_input.npz" and (HERE / "sample_output.npz").is_file():
        with np.load(HERE / "sample_output.npz") as data:
            worst = 0.0
            for name in data.files:
                want, got = data[name].astype(np.float64), outputs[name].astype(np.float64)
                scale = float(np.max(np.abs(want))) or 1.0
                worst = max(worst, float(np.max(np.abs(want - got))) / scale)
        line["max_rel_diff_vs_recorded"] = worst
        code = 0 if worst <= args.rtol else 1
    print(json.dumps(line))
    return code


if __name__ == "__main__":
    sys.exit(main())
