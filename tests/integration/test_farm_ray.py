"""`kiln export ... --cluster ADDRESS`: a matrix's cells as Ray tasks on a real local 3-node cluster
(`ray.cluster_utils.Cluster`, one fixture for the module): a head and a plain node with this machine's own labels,
and a node labelled as an AMX Xeon (the labels are the only fake: Ray cannot tell, and kiln places by them).

The model is the matrix test's: it multiplies by a weight and inverts the result with com.microsoft.Inverse, which
ONNX Runtime runs and OpenVINO cannot convert, so one cell fails for real on whatever node it lands on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kiln.artifact.publish import pid_alive
from kiln.artifact.verify import verify
from kiln.schemas import validate_document
from kiln.targets.labels import BENCH_RESOURCE, this_node_labels
from tests.conftest import run_cli, tiny_mlp_onnx
from tests.integration.test_matrix import FAST, _inverse_model

ray = pytest.importorskip("ray", reason="the ray extra is not installed (scripts/setup.sh installs it)")
# everything a Sapphire Rapids node publishes, whatever this machine's CPU has (an AVX2-only EPYC lacks AVX-512)
AMX = {f"kiln.dev/cpu-{flag}": "true" for flag in ("avx512f", "avx512-vnni", "avx512-bf16", "amx-int8", "amx-tile",
                                                   "amx-bf16")}


@pytest.fixture(scope="module")
def cluster():
    from ray.cluster_utils import Cluster

    here = this_node_labels()  # this machine as `kiln node-labels` describes it (OpenVINO installed, its CPU flags)
    started = time.perf_counter()
    made = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "labels": here,
                                                         "resources": {BENCH_RESOURCE: 1}})
    amx = made.add_node(num_cpus=1, labels={**here, **AMX}, resources={BENCH_RESOURCE: 1})
    made.add_node(num_cpus=1, labels=here, resources={BENCH_RESOURCE: 1})
    made.wait_for_nodes()
    made.start_seconds = time.perf_counter() - started
    made.amx_node_id = amx.node_id
    yield made
    made.shutdown()


def without_openvino(root) -> dict:
    """The environment of a driver that cannot import OpenVINO, as a CI runner that only dispatches: a package of
    that name first on its path that raises ImportError (the cluster's nodes, started by this process, have it)."""
    blocked = root / "no-openvino" / "openvino"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('OpenVINO is not installed on this driver (test)')\n")
    return {"PYTHONPATH": os.pathsep.join([str(blocked.parent), *filter(None, [os.environ.get("PYTHONPATH")])])}


@pytest.fixture(scope="module")
def farmed(cluster, tmp_path_factory):
    """The matrix, driven from a process without OpenVINO: its OpenVINO cell is resolved there and checked and built
    on a node that has it."""
    root = tmp_path_factory.mktemp("farm")
    model = _inverse_model(root / "inv.onnx")
    out = root / "out"
    started = time.perf_counter()
    done = run_cli("export", model, "--target", "onnxruntime,openvino,x86-amx,tensorrt-sm89", "--precision", "fp32",
                   "--out", out, "--json", "--quiet", "--cluster", cluster.address, *FAST, timeout=600,
                   env=without_openvino(root))
    return done, out, model, time.perf_counter() - started


def _cells(comparison) -> dict:
    return {c["target"]: c for c in comparison["cells"]}


def test_each_cell_lands_where_its_hardware_is_and_a_failure_stops_nothing(farmed, cluster):
    done, out, _, seconds = farmed
    assert done.returncode == 0, done.stderr
    comparison = json.loads(done.stdout)
    assert validate_document(comparison, "comparison") == []
    assert comparison["executor"]["kind"] == "ray" and comparison["executor"]["nodes"] == 3
    cells = _cells(comparison)
    assert {t: c["status"] for t, c in cells.items()} == {
        "onnxruntime-cpu": "ok", "openvino-cpu": "failed", "x86-amx": "ok", "tensorrt-sm89": "no-hardware"}
    assert cells["x86-amx"]["node"]["node_id"] == cluster.amx_node_id  # only that node says it has AMX
    # the driver has no OpenVINO: a node's OpenVINO met the model, and failed on it for real
    assert "com.microsoft.Inverse" in cells["openvino-cpu"]["reason"] and cells["openvino-cpu"]["exit_code"] == 5
    assert cells["openvino-cpu"]["node"]["node_id"] is not None
    assert cells["tensorrt-sm89"]["reason"].startswith("no node of the cluster (3 alive) has what this target needs")
    assert "kiln.dev/cuda-sm=89" in cells["tensorrt-sm89"]["reason"] and cells["tensorrt-sm89"]["node"] is None
    assert comparison["recommendation"]["target"] in ("onnxruntime-cpu", "x86-amx")
    assert sorted(p.name for p in out.iterdir()) == ["comparison.json", "comparison.md", "onnxruntime-cpu-fp32",
                                                     "report.html", "x86-amx-fp32"]
    print(f"cluster up in {cluster.start_seconds:.1f} s; matrix of 4 cells on it in {seconds:.1f} s")


def test_the_written_artifacts_verify_and_equal_a_local_build_byte_for_byte(farmed, tmp_path):
    done, out, model, _ = farmed
    for cell in ("onnxruntime-cpu-fp32", "x86-amx-fp32"):
        assert verify(out / cell)["ok"]
        report = json.loads((out / cell / "report.json").read_text(encoding="utf-8"))
        assert report["status"] == "ok" and report["accuracy"]["gate"]["passed"]
    local = tmp_path / "local"
    built = run_cli("export", model, "--target", "onnxruntime", "--precision", "fp32", "--out", local, "--quiet",
                    *FAST, timeout=300)
    assert built.returncode == 0, built.stderr
    farm_files = json.loads((out / "onnxruntime-cpu-fp32" / "manifest.json").read_text())["files"]
    local_files = json.loads((local / "manifest.json").read_text())["files"]
    assert {f["path"]: f["sha256"] for f in farm_files} == {f["path"]: f["sha256"] for f in local_files}


def _paused_node(cluster, labels: dict, paused_file):
    """A node whose workers pause in the compile stage (KILN_PAUSE_AT in the node's environment when it starts)."""
    saved = {k: os.environ.get(k) for k in ("KILN_PAUSE_AT", "KILN_PAUSE_SECONDS", "KILN_PAUSE_FILE")}
    os.environ.update(KILN_PAUSE_AT="compile", KILN_PAUSE_SECONDS="300", KILN_PAUSE_FILE=str(paused_file))
    try:
        return cluster.add_node(num_cpus=1, labels=labels, resources={BENCH_RESOURCE: 1})
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)


def _wait_for(path, driver, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.2)
    assert path.exists(), "the cell never reached the compile stage on the paused node"


def _interruptible() -> None:
    """The driver as a terminal starts it: a CI job run in the background starts its children with SIGINT ignored,
    and Python then never raises KeyboardInterrupt (the first CI runs of this test waited out their timeout)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_cancels_the_running_cells_kills_their_workers_and_leaves_nothing(cluster, tmp_path):
    """SIGINT while a cell is paused mid-compile on its node: exit 130 with one line, the worker gone (kiln cancels
    with force; Ray would also end a dead driver's tasks), no cell folder or staging left under OUT."""
    paused = tmp_path / "paused.txt"
    node = _paused_node(cluster, {"kiln.dev/arch": "aarch64", "kiln.dev/cpu-asimd": "true"}, paused)
    out, log = tmp_path / "out", tmp_path / "driver.log"
    with open(log, "w") as sink:  # a file, not a pipe: the test waits for the driver, not for its pipes to close
        driver = subprocess.Popen([sys.executable, "-m", "kiln.cli", "export",
                                   str(_inverse_model(tmp_path / "inv.onnx")), "--target", "arm64-cpu", "--precision",
                                   "fp32", "--out", str(out), "--quiet", "--cluster", cluster.address, *FAST],
                                  stdout=subprocess.DEVNULL, stderr=sink, preexec_fn=_interruptible)
    try:
        _wait_for(paused, driver)
        worker = int(paused.read_text().split()[0])
        started = time.monotonic()
        driver.send_signal(signal.SIGINT)
        driver.wait(timeout=120)
        print(f"driver ended {time.monotonic() - started:.1f} s after SIGINT")
    finally:
        if driver.poll() is None:
            driver.kill()
        cluster.remove_node(node)
    stderr = log.read_text()
    assert driver.returncode == 130 and "kiln: interrupted" in stderr and "Traceback" not in stderr, stderr
    deadline = time.monotonic() + 30
    while pid_alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not pid_alive(worker), "the cancelled cell's worker is still running"
    assert not out.exists() or not any(p.name.startswith(("arm64", ".arm64")) for p in out.iterdir())
    assert os.environ.get("KILN_PAUSE_AT") is None


def test_a_cell_whose_node_dies_mid_build_is_retried_on_a_replacement(cluster, tmp_path):
    """A fake ARM node (labels only) whose workers pause in the compile stage (KILN_PAUSE_AT, set in the node's
    environment when it starts, so only its workers pause) is removed while the cell is paused there; a
    replacement with the same labels joins, and Ray's one system retry builds the cell there."""
    arm = {"kiln.dev/arch": "aarch64", "kiln.dev/cpu-asimd": "true"}
    paused = tmp_path / "paused.txt"
    doomed = _paused_node(cluster, arm, paused)
    out = tmp_path / "out"
    driver = subprocess.Popen([sys.executable, "-m", "kiln.cli", "export", str(_inverse_model(tmp_path / "inv.onnx")),
                               "--target", "arm64-cpu,onnxruntime", "--precision", "fp32", "--out", str(out), "--json",
                               "--quiet", "--cluster", cluster.address, *FAST], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(paused, driver)
        cluster.remove_node(doomed)
        replacement = cluster.add_node(num_cpus=1, labels=arm, resources={BENCH_RESOURCE: 1})
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr
    cells = _cells(json.loads(stdout))
    assert cells["arm64-cpu"]["status"] == "ok" and cells["onnxruntime-cpu"]["status"] == "ok"
    assert cells["arm64-cpu"]["node"]["node_id"] == replacement.node_id
    assert verify(out / "arm64-cpu-fp32")["ok"]
    cluster.remove_node(replacement)


def test_a_tensorrt_cell_lands_on_the_gpu_node_and_says_what_that_node_could_not_do(cluster, tmp_path):
    """A node that declares one GPU and an SM89 card (Ray takes both as given; this machine has no GPU): the
    TensorRT cell is placed there, builds the graph and kit, and says that no engine was built or timed, as it
    does on a machine without TensorRT. The same cell on a real GPU node with TensorRT is tests/gpu's."""
    gpu = cluster.add_node(num_cpus=1, num_gpus=1, labels={**this_node_labels(), "kiln.dev/cuda-sm": "89"},
                           resources={BENCH_RESOURCE: 1})
    try:
        done = run_cli("export", tiny_mlp_onnx(tmp_path / "mlp.onnx"), "--target", "tensorrt-sm89", "--precision",
                       "fp32", "--out", tmp_path / "out", "--json", "--quiet", "--cluster", cluster.address, *FAST,
                       timeout=300)
    finally:
        cluster.remove_node(gpu)
    assert done.returncode == 0, done.stderr
    cell = _cells(json.loads(done.stdout))["tensorrt-sm89"]
    assert cell["status"] == "ok" and cell["node"]["node_id"] == gpu.node_id and cell["p50_ms"] is None
    report = json.loads((tmp_path / "out" / "tensorrt-sm89-fp32" / "report.json").read_text())
    assert report["bench_skipped"].startswith("not measured: no NVIDIA GPU on this host")
    assert report["compile"]["engine"]["built"] is False and "is not installed here" in report["compile"]["engine"][
        "reason"]
    assert verify(tmp_path / "out" / "tensorrt-sm89-fp32")["ok"]
    # within the budget but not timed: exit 0, and no "fastest" claim without a time
    assert "the cells within the accuracy budget were not timed (tensorrt-sm89 fp32)" in (
        tmp_path / "out" / "comparison.md").read_text()


def test_a_cell_whose_only_node_leaves_for_good_is_no_hardware_after_the_grace(cluster, tmp_path):
    """The only node with the cell's labels is removed mid-cell and none replaces it: Ray would keep the retry
    pending forever; kiln gives up after --node-grace, records the cell no-hardware, and the other cell is built."""
    paused = tmp_path / "paused.txt"
    doomed = _paused_node(cluster, {"kiln.dev/arch": "aarch64", "kiln.dev/cpu-asimd": "true"}, paused)
    driver = subprocess.Popen([sys.executable, "-m", "kiln.cli", "export", str(_inverse_model(tmp_path / "inv.onnx")),
                               "--target", "arm64-cpu,onnxruntime", "--precision", "fp32", "--out",
                               str(tmp_path / "out"), "--json", "--quiet", "--cluster", cluster.address,
                               "--node-grace", "2", *FAST], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(paused, driver)
        cluster.remove_node(doomed)
        left = time.monotonic()
        stdout, stderr = driver.communicate(timeout=120)
        print(f"driver ended {time.monotonic() - left:.1f} s after the node left")
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 0, stderr
    cells = _cells(json.loads(stdout))
    assert cells["onnxruntime-cpu"]["status"] == "ok"
    lost = cells["arm64-cpu"]
    assert lost["status"] == "no-hardware" and lost["exit_code"] == 3
    assert lost["reason"].startswith("the nodes that fitted left the cluster and none joined in 2 s: ")
    assert "kiln.dev/arch=aarch64" in lost["reason"]
    assert not (tmp_path / "out" / "arm64-cpu-fp32").exists()


def test_a_plan_of_two_models_on_the_cluster_lands_each_amx_cell_on_the_amx_node(cluster, tmp_path):
    from tests.integration.test_build_plan import BUILD_FAST, two_models, write_plan

    plan = write_plan(tmp_path, two_models(tmp_path, ["onnxruntime", "x86-amx", "tensorrt-sm89"]))
    done = run_cli("build", plan, "--out", tmp_path / "out", "--json", "--quiet", "--cluster", cluster.address,
                   *BUILD_FAST, timeout=600)
    assert done.returncode == 0, done.stderr
    index = json.loads(done.stdout)
    assert [m["cells"] for m in index["models"]] == [{"ok": 2, "no-hardware": 1},
                                                    {"ok": 4, "no-hardware": 1, "refused": 1}]  # TensorRT: no int8-dynamic
    for model in index["models"]:
        comparison = json.loads((tmp_path / "out" / model["comparison"]).read_text())
        assert comparison["executor"]["kind"] == "ray"
        for cell in comparison["cells"]:
            if cell["target"] == "x86-amx":
                assert cell["node"]["node_id"] == cluster.amx_node_id
            if cell["status"] == "ok":
                assert verify(tmp_path / "out" / model["name"] / f"{cell['target']}-{cell['precision']}")["ok"]
