"""The build farm's pieces that need no cluster: what each target asks of a node, what a node publishes, and the
bytes that carry a cell's artifact back (checked, never trusted)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import pytest

from kiln.errors import UsageError, VerificationError
from kiln.farm.ray_executor import Node, unmet
from kiln.farm.transfer import pack, unpack
from kiln.targets import find_target
from kiln.targets.host import Host
from kiln.targets.labels import BENCH_RESOURCE, need_of, node_fits, node_labels

SAPPHIRE_RAPIDS = Host("x86_64", "Intel Xeon Platinum 8480+", frozenset(
    {"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16", "sse4_2"}))
ZEN5 = Host("x86_64", "AMD EPYC 9R45", frozenset({"avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16"}))
GRAVITON = Host("aarch64", "Neoverse-V1", frozenset({"asimd", "sve"}))


def test_each_target_asks_for_what_its_catalogue_entry_says():
    amx = need_of(find_target("intel-cpu-amx"), timed=True)
    assert amx.labels == {"kiln.dev/arch": "x86_64", "kiln.dev/cpu-avx512f": "true", "kiln.dev/cpu-avx512-bf16": "true",
                          "kiln.dev/cpu-amx-bf16": "true", "kiln.dev/cpu-amx-int8": "true", "kiln.dev/openvino": "true"}
    assert amx.resources == {BENCH_RESOURCE: 1} and amx.num_gpus == 0
    sm89 = need_of(find_target("tensorrt-sm89"), timed=False)
    assert sm89.labels == {"kiln.dev/cuda-sm": "89"} and sm89.num_gpus == 1 and sm89.resources == {}
    assert need_of(find_target("tensorrt-rtx"), timed=True).labels == {"kiln.dev/cuda-sm": "in(86,89,120)"}
    assert need_of(find_target("onnxruntime"), timed=True).labels == {}  # any CPU node
    assert need_of(find_target("openvino-cpu"), timed=True).labels == {"kiln.dev/openvino": "true"}


def test_a_node_publishes_the_flags_targets_need_and_nothing_else():
    labels = node_labels(SAPPHIRE_RAPIDS, {"gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.x"},
                         ("CPU", "GPU.0"))
    assert labels["kiln.dev/cpu-amx-int8"] == "true" and labels["kiln.dev/cuda-sm"] == "89"
    assert labels["kiln.dev/tensorrt"] == "10.x" and labels["kiln.dev/openvino-gpu"] == "true"
    assert "kiln.dev/cpu-sse4-2" not in labels  # no target needs it
    assert labels["kiln.dev/openvino"] == "true"
    assert "kiln.dev/cpu-amx-int8" not in node_labels(ZEN5) and "kiln.dev/openvino" not in node_labels(ZEN5)
    assert node_fits(need_of(find_target("openvino-cpu"), timed=True), node_labels(ZEN5, None, ("CPU",)),
                     {"CPU": 2, BENCH_RESOURCE: 1}) is None


@pytest.mark.parametrize(("target", "host", "resources", "lacks"), [
    ("x86-amx", SAPPHIRE_RAPIDS, {"CPU": 2, BENCH_RESOURCE: 1}, None),
    ("x86-amx", ZEN5, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/cpu-amx-int8=true"),
    ("x86-amx", SAPPHIRE_RAPIDS, {"CPU": 2}, f"resource {BENCH_RESOURCE}"),
    ("x86-amx", SAPPHIRE_RAPIDS, {"CPU": 0, BENCH_RESOURCE: 1}, "a CPU for tasks"),
    ("intel-cpu-amx", SAPPHIRE_RAPIDS, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/openvino=true"),
    ("arm64-cpu", GRAVITON, {"CPU": 2, BENCH_RESOURCE: 1}, None),
    ("arm64-cpu", ZEN5, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/arch=aarch64"),
    ("tensorrt-sm89", ZEN5, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/cuda-sm=89"),
    ("openvino-cpu", ZEN5, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/openvino=true"),  # a node without OpenVINO
])
def test_a_node_fits_a_target_only_with_its_labels_and_resources(target, host, resources, lacks):
    need = need_of(find_target(target), timed=True)
    assert node_fits(need, node_labels(host), resources) == lacks


def test_a_cell_no_node_can_take_is_named_with_what_the_nodes_lack():
    nodes = [Node("a", node_labels(ZEN5), {"CPU": 2, BENCH_RESOURCE: 1}),
             Node("b", node_labels(GRAVITON), {"CPU": 2, BENCH_RESOURCE: 1})]
    assert unmet(need_of(find_target("arm64-cpu"), timed=True), nodes) is None
    reason = unmet(need_of(find_target("tensorrt-sm89"), timed=True), nodes)
    assert reason.startswith("no node of the cluster (2 alive) has what this target needs (kiln.dev/cuda-sm=89, 1 GPU")
    assert "kiln.dev/cuda-sm=89" in reason.split("lack")[1]


def test_a_folder_travels_as_the_same_bytes_and_arrives_whole(tmp_path):
    source = tmp_path / "cell"
    (source / "sub").mkdir(parents=True)
    (source / "model.onnx").write_bytes(b"\x08\x07" * 1000)
    (source / "sub" / "run.py").write_text("print('hi')\n")
    (source / "sub" / "run.py").chmod(0o755)
    data, sha = pack(source)
    again, sha_again = pack(source)
    assert (data, sha) == (again, sha_again)  # the bytes depend only on the files
    dest = tmp_path / "arrived"
    dest.mkdir()
    unpack(data, sha, dest)
    assert (dest / "model.onnx").read_bytes() == b"\x08\x07" * 1000
    assert (dest / "sub" / "run.py").stat().st_mode & 0o100


def test_damaged_or_hostile_bytes_are_refused(tmp_path):
    source = tmp_path / "cell"
    source.mkdir()
    (source / "a.txt").write_text("a")
    data, sha = pack(source)
    with pytest.raises(VerificationError, match="do not match their sha256"):
        unpack(data[:-1] + bytes([data[-1] ^ 1]), sha, tmp_path)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    import hashlib

    hostile = buffer.getvalue()
    (tmp_path / "in").mkdir()
    with pytest.raises(UsageError, match="points outside the bundle"):
        unpack(hostile, hashlib.sha256(hostile).hexdigest(), tmp_path / "in")
    assert not (tmp_path / "escaped.txt").exists()


def test_a_node_running_another_kiln_refuses_the_cell_before_touching_it(tmp_path):
    """The version check comes first: a cell built by another kiln would not be the artifact asked for."""
    from kiln.config import ExportConfig
    from kiln.farm.cells import run_cell

    config = ExportConfig(source=str(tmp_path / "m.onnx"), target="onnxruntime", precision="fp32",
                          out=tmp_path / "out" / "onnxruntime-cpu-fp32")
    job = {"config": config.model_dump(mode="json"), "budget": {}, "prepared_sha256": "0" * 64,
           "kiln_version": "0.0.1", "driver_host": {}}
    result = run_cell(job, b"not a prepared export: never read")
    record = result["record"]
    assert record["status"] == "failed" and record["exit_code"] == 2 and "data" not in result
    assert record["reason"].startswith("this node runs kiln ") and "the driver 0.0.1" in record["reason"]
    assert "install the same kiln on every node" in record["reason"]
    assert result["node"]["pid"] == os.getpid()


def test_a_killed_cells_scratch_is_removed_by_the_next_cell_and_a_live_ones_kept(tmp_path):
    """A cancelled cell's worker is killed before its own cleanup runs: its folder names its pid, so the next cell
    on the machine knows it is an orphan."""
    from kiln.farm.cells import sweep_scratch

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"cell-{gone.stdout.strip()}-abc123"
    running = tmp_path / f"cell-{os.getpid()}-def456"
    other = tmp_path / "cell-notapid-x"
    for folder in (orphan, running, other):
        (folder / "prepared").mkdir(parents=True)
        (folder / "prepared" / "model.onnx").write_bytes(b"x" * 100)
    assert sweep_scratch(tmp_path) == [orphan]
    assert not orphan.exists() and running.exists() and other.exists()
    assert sweep_scratch(tmp_path / "absent") == []

