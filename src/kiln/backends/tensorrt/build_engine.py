#!/usr/bin/env python3
"""Build a TensorRT engine from a kiln build kit. Needs only the TensorRT Python package.

kiln copies this file, unchanged, into every TensorRT artifact (tensorrt/build_engine.py) next to the
prepared ONNX and build.json, and runs the same code itself when a builder is installed. Precision lives in
the ONNX graph (Cast and Q/DQ nodes): the network is strongly typed, and no precision flags are set, so the
same kit builds on TensorRT 10.x (STRONGLY_TYPED flag), 11.x (always strongly typed) and TensorRT for RTX
(ahead of time, for the compute capabilities in build.json, on a machine without a GPU).

    python build_engine.py                       # in the artifact's tensorrt/ folder, on the device
    python build_engine.py --kit DIR --builder tensorrt|tensorrt_rtx|auto --out DIR
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KIT_SCHEMA = "kiln.tensorrt-build/1"


class BuildError(Exception):
    """The parse or the build failed; the message names the nodes and op types where it can."""


class KitError(BuildError):
    """build.json is not a kit this script reads: damaged, another schema, or a file path that is not a plain
    relative path inside the kit (checked as text, so a NUL byte or '..' never reaches the filesystem)."""


def _plain_relative(name) -> bool:
    """A path inside the kit, as text: no NUL/control character, backslash, drive, '..', '.' or empty segment."""
    if not isinstance(name, str) or not name or name.startswith("/") or any(c in name for c in "\\:\x7f"):
        return False
    try:
        too_long = len(name.encode("utf-8")) > 4096
    except UnicodeEncodeError:  # a lone surrogate: no filesystem call could take it
        return False
    return not too_long and not any(ord(c) < 32 for c in name) and all(
        part not in ("", ".", "..") and len(part.encode("utf-8")) <= 255 for part in name.split("/"))


def _kit_file(kit: Path, settings: dict, key: str) -> Path:
    name = settings.get(key)
    if not _plain_relative(name):
        raise KitError(f"build.json {key} {ascii(name)[:120]} is not a relative path inside the kit")
    return kit / name


def read_kit(kit: Path) -> dict:
    """build.json, checked before any builder is imported or any file it names is opened."""
    try:
        settings = json.loads((kit / "build.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise KitError(f"cannot read {kit / 'build.json'}: {ascii(str(exc))[1:-1][:160]}") from None
    if not isinstance(settings, dict) or settings.get("schema_version") != KIT_SCHEMA:
        raise KitError(f"{kit / 'build.json'} is not a {KIT_SCHEMA} build file")
    _kit_file(kit, settings, "onnx")
    if settings.get("timing_cache") is not None:
        _kit_file(kit, settings, "timing_cache")
    return settings


def import_builder(which: str = "auto"):
    """(module, kind): full TensorRT ('tensorrt') or TensorRT for RTX ('tensorrt_rtx')."""
    names = {"tensorrt": ["tensorrt"], "tensorrt_rtx": ["tensorrt_rtx", "tensorrt_rtx_bindings"]}
    order = names[which] if which != "auto" else names["tensorrt"] + names["tensorrt_rtx"]
    for name in order:
        try:
            module = importlib.import_module(name)
            # the PyPI `tensorrt` stub imports but has no Builder without NVIDIA's libraries
            if hasattr(module, "Builder"):
                return module, ("tensorrt_rtx" if "rtx" in name else "tensorrt")
        except ImportError:
            continue
    raise BuildError(f"no TensorRT builder importable (tried {', '.join(order)}): pip install tensorrt "
                     "(on an NVIDIA machine) or tensorrt-rtx")


def make_logger(trt, messages: list[str], verbose: bool = False, echo: bool = True):
    """A logger that keeps warnings for the record and writes them to stderr (stdout carries JSON for callers), unless
    `echo` is off: kiln export records them in the build result and keeps its own stderr for its progress."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.WARNING:
                messages.append(str(msg))
            if verbose or (echo and severity <= trt.ILogger.Severity.WARNING):
                print(f"[TensorRT] {msg}", file=sys.stderr)

    return _Logger()


def major_version(trt) -> int:
    return int(str(getattr(trt, "__version__", "0")).split(".")[0] or 0)


def gpu_facts() -> dict:
    """GPU name, compute capability, driver and CUDA versions from nvidia-smi (absent: no GPU)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return {"gpu": None}
    try:
        row = subprocess.run([smi, "--query-gpu=name,compute_cap,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.strip().splitlines()[0]
        name, cc, driver = [x.strip() for x in row.split(",")]
        head = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
        cuda = head.split("CUDA Version:")[1].split()[0] if "CUDA Version:" in head else None
        return {"gpu": name, "compute_capability": cc, "driver": driver, "cuda_driver_api": cuda}
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return {"gpu": None}


def parse_errors(parser) -> list[dict]:
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        entry = {"message": " ".join(str(err.desc()).split())[:300]}
        for key, attr in (("node", "node"), ("node_name", "node_name"), ("op_type", "node_operator")):
            if hasattr(err, attr):
                entry[key] = getattr(err, attr)()
        errors.append(entry)
    return errors


def _network(trt, builder, kind: str):
    if kind == "tensorrt" and major_version(trt) < 11:
        flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
        if flag is None:
            raise BuildError(f"TensorRT {trt.__version__} has no strongly typed networks: TensorRT 10.0 or newer needed")
        return builder.create_network(1 << int(flag))
    return builder.create_network(0)  # TensorRT 11 and TensorRT-RTX: always strongly typed


def _apply_settings(trt, builder, config, network, settings: dict, kind: str, capability: str | None) -> None:
    if settings.get("workspace_bytes"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings["workspace_bytes"]))
    if settings.get("builder_optimization_level") is not None:
        config.builder_optimization_level = int(settings["builder_optimization_level"])
    profile = builder.create_optimization_profile()
    for name, shapes in settings.get("profile", {}).items():
        profile.set_shape(name, tuple(shapes["min"]), tuple(shapes["opt"]), tuple(shapes["max"]))
    if settings.get("profile"):
        config.add_optimization_profile(profile)
    if kind == "tensorrt":
        if hasattr(trt, "ProfilingVerbosity"):  # layer precisions readable by the engine inspector
            config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        level = settings.get("hardware_compatibility", "none")
        if level != "none":
            config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level.upper())
        if settings.get("version_compatible"):
            config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    elif capability is not None:
        config.num_compute_capabilities = 1
        config.set_compute_capability(getattr(trt.ComputeCapability, "SM" + capability.replace(".", "")), 0)


def build(kit: Path, out: Path, which: str = "auto", capabilities: list[str] | None = None,
          echo: bool = True) -> dict:
    """Build every engine the kit asks for into `out`; returns what build_result.json records (with the builder's
    warnings, which `echo` also writes to stderr)."""
    settings = read_kit(kit)
    trt, kind = import_builder(which)
    onnx_path = _kit_file(kit, settings, "onnx")
    if kind == "tensorrt_rtx":
        targets = capabilities or settings.get("rtx_compute_capabilities") or ["8.9"]
    else:
        targets = [None]  # full TensorRT builds for the GPU it runs on
    messages: list[str] = []
    logger = make_logger(trt, messages, echo=echo)
    result = {"schema_version": "kiln.tensorrt-build-result/1", "builder": kind,
              "tensorrt_version": str(trt.__version__), "host": gpu_facts(), "engines": []}
    cache_file = _kit_file(kit, settings, "timing_cache") if settings.get("timing_cache") else None
    out.mkdir(parents=True, exist_ok=True)
    for capability in targets:
        builder = trt.Builder(logger)
        network = _network(trt, builder, kind)
        parser = trt.OnnxParser(network, logger)
        start = time.perf_counter()
        if not parser.parse_from_file(str(onnx_path)):
            errors = parse_errors(parser)
            where = "; ".join(f"node {e.get('node_name') or e.get('node', '?')} ({e.get('op_type', '?')}): "
                              f"{e['message'][:200] or 'no description'}" for e in errors[:3]) or "no parser errors reported"
            raise BuildError(f"TensorRT {trt.__version__} cannot parse {onnx_path.name}: {where}")
        parse_s = time.perf_counter() - start
        config = builder.create_builder_config()
        _apply_settings(trt, builder, config, network, settings, kind, capability)
        cache_used = False
        if cache_file is not None and kind == "tensorrt":  # TensorRT-RTX: timing cache calls are no-ops
            blob = cache_file.read_bytes() if cache_file.exists() else b""
            accepted = config.set_timing_cache(config.create_timing_cache(blob), False)
            cache_used = bool(blob) and accepted is not False  # False: rejected (another GPU or version)
        start = time.perf_counter()
        plan = builder.build_serialized_network(network, config)
        build_s = time.perf_counter() - start
        if plan is None:
            raise BuildError(f"TensorRT {trt.__version__} failed to build the engine"
                             + (f" for SM{capability}" if capability else "") + " (see the log above)")
        name = f"sm{capability.replace('.', '')}.plan" if capability else "engine.plan"
        _atomic_write(out / name, bytes(plan))
        if cache_file is not None and kind == "tensorrt":
            _atomic_write(cache_file, bytes(config.get_timing_cache().serialize()))
        result["engines"].append({"file": name, "bytes": (out / name).stat().st_size, "compute_capability": capability
                                  or result["host"].get("compute_capability"), "parse_seconds": round(parse_s, 3),
                                  "build_seconds": round(build_s, 3), "timing_cache_reused": cache_used,
                                  "layers": network.num_layers})
    result["warnings"] = messages[:50]
    _atomic_write(out / "build_result.json", (json.dumps(result, indent=2) + "\n").encode())
    return result


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build TensorRT engines from a kiln build kit.")
    parser.add_argument("--kit", type=Path, default=Path(__file__).resolve().parent)
    parser.add_argument("--out", type=Path, help="where engines go (default: KIT/engines)")
    parser.add_argument("--builder", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto")
    parser.add_argument("--compute-capability", action="append", help="TensorRT-RTX: e.g. 8.9 (repeat)")
    args = parser.parse_args(argv)
    try:
        result = build(args.kit, args.out or args.kit / "engines", args.builder, args.compute_capability)
    except BuildError as exc:
        print(f"build_engine: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, KitError) else 5
    for engine in result["engines"]:
        print(f"{engine['file']}: {engine['bytes'] / 2**20:.1f} MiB, built in {engine['build_seconds']:.1f} s "
              f"with {result['builder']} {result['tensorrt_version']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
