"""The comparison matrix on this machine against the same matrix on a local 3-node Ray cluster (`--cluster`).

    .venv/bin/python -m benchmarks.farm [--model mlp|minilm]

One process, the stage cache off for every run (each run exports and compiles from scratch). The plan is 12 cells
that every node can build: onnxruntime-cpu, x86-avx512-vnni, x86-avx2 x fp32, int8-dynamic, int8 and openvino-cpu x
fp32, int8-weights, int8 (the MLP on synthetic data; MiniLM on the eval and calibration sentences). Measured:
- start-up: Cluster() with a head and two nodes (one CPU each, this machine's labels, one `kiln-bench` each) until
  every node is up, and the driver's connection;
- wall time of the whole matrix: local (cells one after the other) and on the cluster (up to 3 cells at once: on a
  2-core machine they share the cores, so this shows the cost of the farm, not a speed-up);
- per-cell overhead: the same matrix on a 1-node cluster (cells one after the other, as locally) minus the local
  run, divided by the cells: shipping the prepared source, a worker's imports, packing and checking the artifact.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks import zoo


def _plan(model: str, scratch: Path):
    from kiln.config import DataSpec, ExportConfig
    from kiln.targets import detect_host

    isa = ["x86-avx512-vnni", "x86-avx2"] if "avx512_vnni" in detect_host().cpu_flags else ["x86-avx2"]
    if model == "minilm":
        config = ExportConfig(source=str(zoo.minilm_path()), out=scratch / "out", cache=False,
                              evaluation=DataSpec(path=zoo.EVAL_SENTENCES),
                              calibration=DataSpec(path=zoo.CALIBRATION_SENTENCES))
    else:
        from tests.conftest import tiny_mlp_onnx

        config = ExportConfig(source=str(tiny_mlp_onnx(scratch / "mlp.onnx", hidden=256)), out=scratch / "out",
                              cache=False, synthetic_data=True)
    return config, [["onnxruntime-cpu", *isa], ["fp32", "int8-dynamic", "int8"]], \
        [["openvino-cpu"], ["fp32", "int8-weights", "int8"]]


def _matrix(config, groups, executor=None) -> tuple[float, list[dict]]:
    from kiln.matrix import run_matrix

    started, cells = time.perf_counter(), []
    for number, (targets, precisions) in enumerate(groups):
        out = config.out.with_name(f"{config.out.name}-{number}")
        shutil.rmtree(out, ignore_errors=True)
        cells += run_matrix(config.model_copy(update={"out": out}), targets, precisions, executor=executor)["cells"]
    return time.perf_counter() - started, cells


def _cluster(nodes: int):
    from ray.cluster_utils import Cluster

    from kiln.targets.labels import BENCH_RESOURCE, this_node_labels

    labels, started = this_node_labels(), time.perf_counter()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "labels": labels,
                                                            "resources": {BENCH_RESOURCE: 1}})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=1, labels=labels, resources={BENCH_RESOURCE: 1})
    cluster.wait_for_nodes()
    up = time.perf_counter() - started
    import ray

    started = time.perf_counter()
    ray.init(address=cluster.address, log_to_driver=False, logging_level="ERROR")
    return cluster, up, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=("minilm", "mlp"), default="mlp")
    args = parser.parse_args(argv)
    import ray

    from kiln.farm.ray_executor import RayExecutor
    from kiln.targets import detect_host

    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    with tempfile.TemporaryDirectory() as scratch:
        config, *groups = _plan(args.model, Path(scratch))
        local_s, cells = _matrix(config, groups)
        rows = {"local": (local_s, None, None, cells)}
        for nodes in (3, 1):
            cluster, up, connect = _cluster(nodes)
            try:
                wall, cells = _matrix(config, groups, RayExecutor(cluster.address))
            finally:
                ray.shutdown()
                cluster.shutdown()
            rows[f"Ray, {nodes} node{'s' * (nodes > 1)}"] = (wall, up, connect, cells)
    built = len([c for c in rows["local"][3] if c["status"] == "ok"])
    print(f"{args.model}: {len(rows['local'][3])} cells ({built} ok locally), {detect_host().cpu_model}, "
          f"{os.cpu_count()} cores\n")
    print("| run | cluster up s | connect s | matrix wall s | vs local | per cell beyond local s | statuses |")
    print("|---|---|---|---|---|---|---|")
    for name, (wall, up, connect, cells) in rows.items():
        statuses = ", ".join(f"{s} {sum(c['status'] == s for c in cells)}" for s in sorted({c["status"] for c in cells}))
        extra = "–" if up is None else f"{(wall - local_s) / len(cells):+.2f}"
        print(f"| {name} | {'–' if up is None else f'{up:.1f}'} | {'–' if connect is None else f'{connect:.1f}'} | "
              f"{wall:.1f} | {wall / local_s:.2f}x | {extra} | {statuses} |")


if __name__ == "__main__":
    main()
