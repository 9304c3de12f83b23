"""kiln's TensorRT engine build script (build_engine.py) driven by a FAKE `tensorrt` module.

Full TensorRT cannot be installed on this machine and there is no NVIDIA GPU, so every test here injects a
fake `tensorrt` module into sys.modules. The fake is not TensorRT: it builds nothing and its engine and timing
cache are placeholder bytes. It models the Python API surface build_engine.py uses, as documented for
TensorRT 10.x (STRONGLY_TYPED network flag, weak-typing precision flags still present) and 11.x (those flags
removed, networks always strongly typed, create_network(0) only), and records every call so the tests can
check exactly what kiln asked the builder to do: the network's typing, that no precision flag is ever set,
the optimization profile, workspace, optimization level, hardware compatibility, the timing cache round
trip, the one-line errors for parse and build failures, and where the logger writes.

The ONNX file and the build.json are real: the tiny MLP from tests/conftest.py and kiln's own kit writer.
"""

from __future__ import annotations

import enum
import json
import sys
import types
from pathlib import Path

import onnx
import pytest

from kiln.backends.tensorrt import build_engine
from kiln.backends.tensorrt.kit import write_kit
from kiln.config import Plan, TensorRTSettings
from kiln.targets.host import Host
from tests.conftest import tiny_mlp_onnx

HOST = {"gpu": "NVIDIA L4", "compute_capability": "8.9", "driver": "580.1", "cuda_driver_api": "13.0"}
PROFILE = {"x": {"min": [1, 8], "opt": [1, 8], "max": [16, 8]}}
WORKSPACE_MIB = 64
PRECISION_FLAGS = ("FP16", "INT8", "BF16", "FP8", "INT4", "FP4", "TF32", "OBEY_PRECISION_CONSTRAINTS",
                   "PREFER_PRECISION_CONSTRAINTS", "DIRECT_IO")


# ---------------------------------------------------------------------------------------------- the fake


class FakeParserError:
    """Models tensorrt.ParserError: desc(), node(), node_name(), node_operator()."""

    def __init__(self, desc: str, node: int, node_name: str, node_operator: str):
        self._desc, self._node, self._node_name, self._op = desc, node, node_name, node_operator

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._node_name

    def node_operator(self) -> str:
        return self._op


def make_fake_tensorrt(version: str) -> types.ModuleType:
    """A fake `tensorrt` module of the given version (not TensorRT: no GPU or TensorRT on this machine).

    Knobs the tests set on the module: `parse_errors` (a non-empty list makes parse_from_file return False),
    `build_returns_none`. Records: `calls` (every builder/config/profile/parser call, in order), `loggers`."""
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.calls = []
    trt.loggers = []
    trt.parse_errors = []
    trt.build_returns_none = False
    record = trt.calls.append

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self):
            self._base_initialised = True  # pybind11 refuses trampoline objects whose base __init__ was skipped

        def log(self, severity, msg):  # pragma: no cover - the subclass must override it
            raise NotImplementedError

    ILogger.Severity = Severity

    class Logger(ILogger):
        def __init__(self, min_severity=Severity.WARNING):
            super().__init__()
            self.min_severity = min_severity

        def log(self, severity, msg):
            if severity <= self.min_severity:
                print(msg, file=sys.stderr)

    trt.ILogger, trt.Logger = ILogger, Logger

    if major >= 11:  # STRONGLY_TYPED (and EXPLICIT_BATCH) are gone: networks are always strongly typed
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag",
                                                         {"PREFER_JIT_PYTHON_PLUGINS": 2})
    elif major >= 10:
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {
            "EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1, "PREFER_JIT_PYTHON_PLUGINS": 2})
    else:  # 8.6: no strongly typed networks
        trt.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", {
            "EXPLICIT_BATCH": 0, "EXPLICIT_PRECISION": 1})

    flags = ["DEBUG", "GPU_FALLBACK", "REFIT", "DISABLE_TIMING_CACHE", "SPARSE_WEIGHTS", "SAFETY_SCOPE",
             "REJECT_EMPTY_ALGORITHMS", "VERSION_COMPATIBLE", "EXCLUDE_LEAN_RUNTIME", "ERROR_ON_TIMING_CACHE_MISS",
             "DISABLE_COMPILATION_CACHE", "STRIP_PLAN", "REFIT_IDENTICAL", "WEIGHT_STREAMING"]
    if major < 11:  # the weak-typing precision flags, removed in TensorRT 11
        flags += list(PRECISION_FLAGS)
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags)
    trt.HardwareCompatibilityLevel = enum.Enum("HardwareCompatibilityLevel",
                                               ["NONE", "AMPERE_PLUS", "SAME_COMPUTE_CAPABILITY"])
    trt.MemoryPoolType = enum.Enum("MemoryPoolType", ["WORKSPACE", "DLA_MANAGED_SRAM", "DLA_LOCAL_DRAM",
                                                      "DLA_GLOBAL_DRAM", "TACTIC_DRAM", "TACTIC_SHARED_MEMORY"])
    trt.serialized_cache = f"FAKE-TIMING-CACHE/{version}".encode()
    trt.plan_bytes = f"FAKE-ENGINE/{version}/".encode() * 100

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.num_layers = 0

    class Profile:
        def set_shape(self, name, min, opt, max):  # noqa: A002 - TensorRT's own parameter names
            record(("set_shape", name, tuple(min), tuple(opt), tuple(max)))

    class TimingCache:
        def __init__(self, blob: bytes):
            self.blob = blob

        def serialize(self):
            return memoryview(trt.serialized_cache)  # TensorRT returns IHostMemory, a buffer

    class BuilderConfig:
        """Rejects attributes TensorRT does not have (pybind11 objects do), e.g. int8_calibrator on 11."""

        _settable = ("builder_optimization_level", "hardware_compatibility_level") + (
            ("int8_calibrator",) if major < 11 else ())

        def __init__(self):
            object.__setattr__(self, "timing_cache", None)

        def __setattr__(self, name, value):
            if name not in self._settable:
                raise AttributeError(f"'IBuilderConfig' object has no attribute '{name}'")
            record((name, value))
            object.__setattr__(self, name, value)

        def set_memory_pool_limit(self, pool, size):
            record(("set_memory_pool_limit", pool, size))

        def add_optimization_profile(self, profile):
            record(("add_optimization_profile", profile))
            return 0

        def set_flag(self, flag):
            assert isinstance(flag, trt.BuilderFlag), flag
            record(("set_flag", flag))

        def create_timing_cache(self, blob):
            record(("create_timing_cache", bytes(blob)))
            return TimingCache(bytes(blob))

        def set_timing_cache(self, cache, ignore_mismatch):
            record(("set_timing_cache", cache, ignore_mismatch))
            object.__setattr__(self, "timing_cache", cache)
            return True

        def get_timing_cache(self):
            record(("get_timing_cache",))
            return self.timing_cache

    class Builder:
        def __init__(self, logger):
            if not isinstance(logger, ILogger) or not getattr(logger, "_base_initialised", False):
                raise TypeError("Builder(): incompatible constructor arguments (logger must be an ILogger)")
            trt.loggers.append(logger)
            self.logger = logger
            record(("Builder", logger))

        def create_network(self, flags=0):
            record(("create_network", flags))
            if major >= 11 and flags != 0:
                raise ValueError(f"TensorRT 11: networks are always strongly typed; unknown flags {flags}")
            return Network(flags)

        def create_builder_config(self):
            record(("create_builder_config",))
            return BuilderConfig()

        def create_optimization_profile(self):
            record(("create_optimization_profile",))
            return Profile()

        def build_serialized_network(self, network, config):
            record(("build_serialized_network", network, config))
            self.logger.log(Severity.INFO, "fake info: tactics timed")  # INFO: neither kept nor printed
            self.logger.log(Severity.WARNING, "fake warning: weights of fc1 are subnormal")
            if trt.build_returns_none:
                self.logger.log(Severity.ERROR, "fake error: no implementation for fc2")
                return None
            return memoryview(trt.plan_bytes)

    class OnnxParser:
        def __init__(self, network, logger):
            record(("OnnxParser", network, logger))
            self.network = network
            self.errors = []

        def parse_from_file(self, path):
            record(("parse_from_file", path))
            model = onnx.load(path)  # a real ONNX file, or this raises
            if trt.parse_errors:
                self.errors = list(trt.parse_errors)
                return False
            self.network.num_layers = len(model.graph.node)
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, index):
            return self.errors[index]

    trt.Builder, trt.OnnxParser = Builder, OnnxParser
    return trt


# ------------------------------------------------------------------------------------------ fixtures


def write_test_kit(kit: Path, *, hardware_compatibility: str = "ampere_plus", version_compatible: bool = True,
                   optimization_level: int = 4) -> Path:
    """A real kit: the tiny MLP ONNX and build.json from kiln's kit writer."""
    kit.mkdir(parents=True, exist_ok=True)
    tiny_mlp_onnx(kit / "model.onnx")
    plan = Plan(target="nvidia-l4", backend="tensorrt", device="gpu", precision="fp16", threads=1, measure=False,
                tensorrt=TensorRTSettings(workspace_mib=WORKSPACE_MIB, optimization_level=optimization_level,
                                          hardware_compatibility=hardware_compatibility,
                                          version_compatible=version_compatible))
    settings = write_kit(kit, "model.onnx", plan, PROFILE, {})
    assert json.loads((kit / "build.json").read_text())["schema_version"] == "kiln.tensorrt-build/1"
    assert settings["timing_cache"] == "timing.cache" and settings["rtx_compute_capabilities"] == []
    return kit


@pytest.fixture
def host(monkeypatch):
    """No nvidia-smi here: report an L4 host, as nvidia-smi would on one."""
    monkeypatch.setattr(build_engine, "gpu_facts", lambda: dict(HOST))
    return HOST


def install(monkeypatch, version: str) -> types.ModuleType:
    fake = make_fake_tensorrt(version)
    monkeypatch.setitem(sys.modules, "tensorrt", fake)
    return fake


def calls(fake, name: str) -> list[tuple]:
    return [c for c in fake.calls if c[0] == name]


VERSIONS = pytest.mark.parametrize("version", ["10.13.2", "11.0.0"], ids=["trt10", "trt11"])


# ---------------------------------------------------------------------------------------------- tests


@VERSIONS
def test_build_writes_engine_and_result(tmp_path, monkeypatch, host, version):
    """Fake tensorrt 10.x/11.x (no TensorRT or GPU here): build() writes engines/engine.plan with the bytes the
    builder returned and a build_result.json naming the builder, its version, the engine's size and the host's
    compute capability, with timing_cache_reused False on a first build."""
    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit")
    result = build_engine.build(kit, kit / "engines", "tensorrt")

    plan = kit / "engines" / "engine.plan"
    assert plan.read_bytes() == fake.plan_bytes
    on_disk = json.loads((kit / "engines" / "build_result.json").read_text())
    assert on_disk == result
    assert on_disk["schema_version"] == "kiln.tensorrt-build-result/1"
    assert on_disk["builder"] == "tensorrt" and on_disk["tensorrt_version"] == version
    assert on_disk["host"] == HOST
    [engine] = on_disk["engines"]
    assert engine["file"] == "engine.plan" and engine["bytes"] == len(fake.plan_bytes)
    assert engine["compute_capability"] == "8.9"
    assert engine["timing_cache_reused"] is False
    assert engine["layers"] == 4  # fc1, bias1, relu, fc2: the fake parser read the real file
    assert calls(fake, "parse_from_file") == [("parse_from_file", str(kit / "model.onnx"))]
    assert not list((kit / "engines").glob(".*"))  # no temporary files left by the atomic writes


@VERSIONS
def test_network_is_strongly_typed(tmp_path, monkeypatch, host, version):
    """Fake tensorrt (no TensorRT or GPU here): on 10.x the network is created with exactly the STRONGLY_TYPED
    bit; on 11.x, whose fake has no STRONGLY_TYPED and rejects any flag, with 0. The parser gets that network."""
    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit")
    build_engine.build(kit, kit / "engines", "tensorrt")

    [(_, flags)] = calls(fake, "create_network")
    if version.startswith("10."):
        assert flags == 1 << int(fake.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 2
    else:
        assert not hasattr(fake.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
        assert flags == 0
    [(_, network, _)] = calls(fake, "OnnxParser")
    [(_, built_network, _)] = calls(fake, "build_serialized_network")
    assert network is built_network and network.flags == flags


@VERSIONS
def test_settings_applied_without_precision_flags(tmp_path, monkeypatch, host, version):
    """Fake tensorrt (no TensorRT or GPU here): precision comes from the graph, so no FP16/INT8/BF16/FP8 (or any
    other precision) builder flag is set; VERSION_COMPATIBLE is the only flag. The profile, workspace limit,
    optimization level and hardware compatibility (ampere_plus -> AMPERE_PLUS) from build.json reach the config."""
    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit", hardware_compatibility="ampere_plus", version_compatible=True,
                         optimization_level=4)
    build_engine.build(kit, kit / "engines", "tensorrt")

    assert [flag for _, flag in calls(fake, "set_flag")] == [fake.BuilderFlag.VERSION_COMPATIBLE]
    assert not any(flag.name in PRECISION_FLAGS for _, flag in calls(fake, "set_flag"))
    assert calls(fake, "set_shape") == [("set_shape", "x", (1, 8), (1, 8), (16, 8))]
    assert len(calls(fake, "add_optimization_profile")) == 1
    assert calls(fake, "set_memory_pool_limit") == [("set_memory_pool_limit", fake.MemoryPoolType.WORKSPACE,
                                                     WORKSPACE_MIB * 2**20)]
    assert calls(fake, "builder_optimization_level") == [("builder_optimization_level", 4)]
    assert calls(fake, "hardware_compatibility_level") == [
        ("hardware_compatibility_level", fake.HardwareCompatibilityLevel.AMPERE_PLUS)]
    # the settings are on the config before the build, not after
    order = [c[0] for c in fake.calls]
    assert max(order.index(n) for n in ("set_shape", "set_flag", "set_memory_pool_limit",
                                        "hardware_compatibility_level")) < order.index("build_serialized_network")


@VERSIONS
def test_defaults_set_no_flags_at_all(tmp_path, monkeypatch, host, version):
    """Fake tensorrt (no TensorRT or GPU here): with version_compatible false and hardware_compatibility "none"
    (kiln's defaults) no builder flag is set and the hardware compatibility level is left alone;
    same_compute_capability maps to SAME_COMPUTE_CAPABILITY."""
    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit", hardware_compatibility="none", version_compatible=False)
    build_engine.build(kit, kit / "engines", "tensorrt")
    assert calls(fake, "set_flag") == [] and calls(fake, "hardware_compatibility_level") == []

    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit2", hardware_compatibility="same_compute_capability", version_compatible=False)
    build_engine.build(kit, kit / "engines", "tensorrt")
    assert calls(fake, "set_flag") == []
    assert calls(fake, "hardware_compatibility_level") == [
        ("hardware_compatibility_level", fake.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY)]


@VERSIONS
def test_timing_cache_written_then_reused(tmp_path, monkeypatch, host, version):
    """Fake tensorrt (no TensorRT or GPU here): the first build starts from an empty timing cache and writes the
    builder's serialized cache to the kit's timing.cache; a second build hands those bytes back to
    create_timing_cache, sets that cache on the config, and reports timing_cache_reused True."""
    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit")
    cache = kit / "timing.cache"
    assert not cache.exists()

    first = build_engine.build(kit, kit / "engines", "tensorrt")
    assert calls(fake, "create_timing_cache") == [("create_timing_cache", b"")]
    assert cache.read_bytes() == fake.serialized_cache
    assert first["engines"][0]["timing_cache_reused"] is False

    fake.calls.clear()
    second = build_engine.build(kit, kit / "engines", "tensorrt")
    assert calls(fake, "create_timing_cache") == [("create_timing_cache", fake.serialized_cache)]
    [(_, set_cache, _)] = calls(fake, "set_timing_cache")
    assert set_cache.blob == fake.serialized_cache
    assert second["engines"][0]["timing_cache_reused"] is True
    assert json.loads((kit / "engines" / "build_result.json").read_text())["engines"][0]["timing_cache_reused"] is True


@VERSIONS
@pytest.mark.parametrize("desc", ["Unsupported op Frobnicate",
                                  "Unsupported op Frobnicate\n  In function importFallbackPluginImporter:\n  [8] "
                                  "Assertion failed: creator && \"Plugin not found\""], ids=["plain", "multiline"])
def test_parse_failure_names_node_and_op_in_one_line(tmp_path, monkeypatch, capsys, host, version, desc):
    """Fake tensorrt whose parser fails (no TensorRT or GPU here): build() raises BuildError whose one-line
    message names the failing node (frob_node) and op type (Frobnicate), even for a multi-line description;
    main() returns exit code 5 and prints exactly one line to stderr and nothing to stdout."""
    fake = install(monkeypatch, version)
    fake.parse_errors = [FakeParserError(desc, 3, "frob_node", "Frobnicate")]
    kit = write_test_kit(tmp_path / "kit")

    with pytest.raises(build_engine.BuildError) as caught:
        build_engine.build(kit, kit / "engines", "tensorrt")
    message = str(caught.value)
    assert "frob_node" in message and "Frobnicate" in message and "model.onnx" in message
    assert "\n" not in message
    assert calls(fake, "build_serialized_network") == []
    capsys.readouterr()

    assert build_engine.main(["--kit", str(kit), "--builder", "tensorrt"]) == 5
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 1 and err.endswith("\n")
    assert err.startswith("build_engine: ") and "frob_node" in err and "Frobnicate" in err
    assert not (kit / "engines" / "engine.plan").exists()


@VERSIONS
def test_parse_failure_with_empty_description(tmp_path, monkeypatch, host, version):
    """Fake tensorrt whose parser fails with an empty error description (no TensorRT or GPU here): build()
    should still raise BuildError naming the node and op type."""
    fake = install(monkeypatch, version)
    fake.parse_errors = [FakeParserError("", 3, "frob_node", "Frobnicate")]
    kit = write_test_kit(tmp_path / "kit")
    with pytest.raises(build_engine.BuildError, match="frob_node"):
        build_engine.build(kit, kit / "engines", "tensorrt")


@VERSIONS
def test_build_returning_none_raises(tmp_path, monkeypatch, capsys, host, version):
    """Fake tensorrt whose build_serialized_network returns None, as TensorRT does when the build fails (no
    TensorRT or GPU here): build() raises a one-line BuildError and writes no engine or build_result.json;
    main() returns 5."""
    fake = install(monkeypatch, version)
    fake.build_returns_none = True
    kit = write_test_kit(tmp_path / "kit")

    with pytest.raises(build_engine.BuildError, match="failed to build") as caught:
        build_engine.build(kit, kit / "engines", "tensorrt")
    assert version in str(caught.value) and "\n" not in str(caught.value)
    assert not (kit / "engines" / "engine.plan").exists()
    assert not (kit / "engines" / "build_result.json").exists()
    assert not (kit / "timing.cache").exists()
    capsys.readouterr()
    assert build_engine.main(["--kit", str(kit), "--builder", "tensorrt"]) == 5
    assert capsys.readouterr().out == ""


def test_tensorrt_older_than_10_refused(tmp_path, monkeypatch, host):
    """Fake tensorrt 8.6.1 without STRONGLY_TYPED (no TensorRT or GPU here): build() raises BuildError saying
    TensorRT 10.0 or newer is needed, before parsing or building anything."""
    fake = install(monkeypatch, "8.6.1")
    kit = write_test_kit(tmp_path / "kit")
    with pytest.raises(build_engine.BuildError) as caught:
        build_engine.build(kit, kit / "engines", "tensorrt")
    assert "TensorRT 10.0 or newer" in str(caught.value) and "8.6.1" in str(caught.value)
    assert calls(fake, "parse_from_file") == [] and calls(fake, "build_serialized_network") == []


@VERSIONS
def test_logger_writes_to_stderr_and_keeps_warnings(tmp_path, monkeypatch, capsys, host, version):
    """Fake tensorrt (no TensorRT or GPU here): the logger kiln hands to Builder is a trt.ILogger subclass that
    prints warnings and errors to stderr (stdout carries JSON for callers) and drops INFO; the warning the fake
    builder logged during the build ends up in build_result.json "warnings"."""
    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit")
    result = build_engine.build(kit, kit / "engines", "tensorrt")
    out, err = capsys.readouterr()
    assert out == ""
    assert "fake warning: weights of fc1 are subnormal" in err and "fake info" not in err

    on_disk = json.loads((kit / "engines" / "build_result.json").read_text())
    assert on_disk["warnings"] == result["warnings"] == ["fake warning: weights of fc1 are subnormal"]

    [logger] = fake.loggers
    assert isinstance(logger, fake.ILogger)
    logger.log(fake.ILogger.Severity.WARNING, "direct warning")
    logger.log(fake.ILogger.Severity.ERROR, "direct error")
    logger.log(fake.ILogger.Severity.VERBOSE, "direct verbose")
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == ["[TensorRT] direct warning", "[TensorRT] direct error"]


@VERSIONS
def test_main_builds_into_kit_engines(tmp_path, monkeypatch, capsys, host, version):
    """Fake tensorrt (no TensorRT or GPU here): `build_engine.py --kit KIT` builds into KIT/engines by default,
    returns 0 and prints one summary line naming the engine and the builder version."""
    fake = install(monkeypatch, version)
    kit = write_test_kit(tmp_path / "kit")
    assert build_engine.main(["--kit", str(kit)]) == 0  # --builder auto finds the fake tensorrt first
    out, _ = capsys.readouterr()
    assert out.splitlines() == [out.strip()] and out.startswith("engine.plan:") and f"tensorrt {version}" in out
    assert (kit / "engines" / "engine.plan").read_bytes() == fake.plan_bytes


def test_gpu_facts_reads_nvidia_smi(tmp_path, monkeypatch):
    """A fake nvidia-smi script (no GPU or driver here) printing what the real one prints on an L4: gpu_facts()
    returns its name, compute capability, driver and CUDA driver API version; without nvidia-smi, no GPU."""
    smi = tmp_path / "nvidia-smi"
    smi.write_text(f"#!{sys.executable}\n"
                   "import sys\n"
                   "if any(a.startswith('--query-gpu') for a in sys.argv[1:]):\n"
                   "    print('NVIDIA L4, 8.9, 580.1')\n"
                   "else:\n"
                   "    print('| NVIDIA-SMI 580.1    Driver Version: 580.1    CUDA Version: 13.0     |')\n")
    smi.chmod(0o755)
    monkeypatch.setattr(build_engine.shutil, "which", lambda name: str(smi) if name == "nvidia-smi" else None)
    assert build_engine.gpu_facts() == HOST
    monkeypatch.setattr(build_engine.shutil, "which", lambda name: None)
    assert build_engine.gpu_facts() == {"gpu": None}


# ------------------------------------------------------------------- which engine this machine's GPU runs

L4 = {"gpu": "NVIDIA L4", "compute_capability": "8.9"}
RTX_BUILT = {"built": True, "builder": "tensorrt_rtx",
             "engines": [{"file": "sm86.plan", "compute_capability": "8.6"},
                         {"file": "sm89.plan", "compute_capability": "8.9"}]}


@pytest.mark.parametrize(("engine", "gpu", "expected"), [
    ({"built": True, "builder": "tensorrt", "engines": [{"file": "engine.plan"}]}, L4,
     ("engines/engine.plan", "tensorrt")),
    (RTX_BUILT, L4, ("engines/sm89.plan", "tensorrt_rtx")),  # ahead of time for several GPUs: this one's
    (RTX_BUILT, {"gpu": "NVIDIA H100", "compute_capability": "9.0"},
     "TensorRT-RTX built engines for SM8.6, SM8.9, and this GPU (NVIDIA H100) is SM9.0"),
    ({"built": False, "reason": "tensorrt is not installed here"}, L4,
     "no engine was built here (tensorrt is not installed here)"),
    (RTX_BUILT, {"gpu": None}, "no NVIDIA GPU here: the engine is timed on the device"),
])
def test_a_gpu_host_times_the_engine_it_can_run_and_never_the_cpu_graph_check(engine, gpu, expected):
    """Data only (no TensorRT involved): which built engine this GPU runs, or why none (the bench is then skipped:
    the prepared graph on ONNX Runtime CPU is the accuracy check, not the engine's speed)."""
    from kiln.backends.tensorrt import _engine_for_this_gpu

    assert _engine_for_this_gpu(engine, gpu) == expected


@pytest.mark.parametrize(("host", "saturates"), [
    (Host("x86_64", "AMD EPYC 7B13", frozenset({"avx2", "fma"})), True),  # Zen 3: vpmaddubsw, 16-bit sums
    (Host("x86_64", "AMD EPYC 9R45", frozenset({"avx2", "avx512f", "avx512_vnni"})), False),
    (Host("aarch64", "Neoverse-V1", frozenset({"asimd"})), False),
    (Host("x86_64", "Intel Core Ultra 7", frozenset({"avx2", "fma", "avx_vnni"})), False),
])
def test_which_hosts_int8_kernels_saturate(host, saturates):
    """Data only: where ONNX Runtime's u8 x s8 kernels sum in 16 bits (static int8 then quantizes weights to 7 bits)."""
    from kiln.backends.onnxruntime.session import int8_kernels_saturate

    assert int8_kernels_saturate(host) is saturates


@pytest.mark.parametrize(("precision", "unfused"), [("int8", True), ("fp8", True), ("fp16", False)])
def test_low_precision_graph_checks_run_q_dq_unfused_on_every_host(precision, unfused):
    """Data only: the CPU check of a TensorRT graph computes Q/DQ in float, as TensorRT's exact int32 sums do, whatever
    the host (fused, ONNX Runtime gave EfficientNet-Lite0's int8 graph with fp16 scales 0 % top-1 agreement on an
    AVX-512 VNNI CPU, 93.8 % unfused)."""
    from kiln.backends.tensorrt import graph_check_settings

    plan = Plan(target="tensorrt", backend="tensorrt", device="gpu", precision=precision, threads=2, measure=False)
    entries = graph_check_settings(plan).get("config_entries", {})
    assert (entries.get("session.disable_quant_qdq") == "1") is unfused
