"""The build farm's pieces that need no cluster: what each target asks of a node, what a node publishes, and the
bytes that carry a cell's artifact back (checked, never trusted)."""

from __future__ import annotations

import io
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
                          "kiln.dev/cpu-amx-bf16": "true", "kiln.dev/cpu-amx-int8": "true"}
    assert amx.resources == {BENCH_RESOURCE: 1} and amx.num_gpus == 0
    sm89 = need_of(find_target("tensorrt-sm89"), timed=False)
    assert sm89.labels == {"kiln.dev/cuda-sm": "89"} and sm89.num_gpus == 1 and sm89.resources == {}
    assert need_of(find_target("tensorrt-rtx"), timed=True).labels == {"kiln.dev/cuda-sm": "in(86,89,120)"}
    assert need_of(find_target("onnxruntime"), timed=True).labels == {}  # any CPU node


def test_a_node_publishes_the_flags_targets_need_and_nothing_else():
    labels = node_labels(SAPPHIRE_RAPIDS, {"gpu": "NVIDIA L4", "compute_capability": "8.9", "tensorrt": "10.x"},
                         ("CPU", "GPU.0"))
    assert labels["kiln.dev/cpu-amx-int8"] == "true" and labels["kiln.dev/cuda-sm"] == "89"
    assert labels["kiln.dev/tensorrt"] == "10.x" and labels["kiln.dev/openvino-gpu"] == "true"
    assert "kiln.dev/cpu-sse4-2" not in labels  # no target needs it
    assert "kiln.dev/cpu-amx-int8" not in node_labels(ZEN5)


@pytest.mark.parametrize(("target", "host", "resources", "lacks"), [
    ("intel-cpu-amx", SAPPHIRE_RAPIDS, {"CPU": 2, BENCH_RESOURCE: 1}, None),
    ("intel-cpu-amx", ZEN5, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/cpu-amx-bf16=true"),
    ("intel-cpu-amx", SAPPHIRE_RAPIDS, {"CPU": 2}, f"resource {BENCH_RESOURCE}"),
    ("intel-cpu-amx", SAPPHIRE_RAPIDS, {"CPU": 0, BENCH_RESOURCE: 1}, "a CPU for tasks"),
    ("arm64-cpu", GRAVITON, {"CPU": 2, BENCH_RESOURCE: 1}, None),
    ("arm64-cpu", ZEN5, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/arch=aarch64"),
    ("tensorrt-sm89", ZEN5, {"CPU": 2, BENCH_RESOURCE: 1}, "kiln.dev/cuda-sm=89"),
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
