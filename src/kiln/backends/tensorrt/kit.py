"""The TensorRT build kit: build.json, the build script, and the equivalent trtexec command line.

Every NVIDIA artifact carries it, because an engine is specific to the GPU, the TensorRT version and the
OS: the device builds its own engine from the prepared ONNX with exactly the settings recorded here.
"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

from kiln.artifact import write_json
from kiln.backends.tensorrt.build_engine import KIT_SCHEMA
from kiln.config import Plan
from kiln.signature import Signature

BATCH_NAMES = ("batch", "batch_size", "n")


def profile_for(signature: Signature, example: dict, plan: Plan) -> dict:
    """min/opt/max per input. Given ranges win; otherwise dynamic axes get min 1, opt = the example shape,
    and max = --max-batch for batch axes or the example size for the others (pass --profile to widen)."""
    settings = plan.tensorrt
    given = {r.name: r for r in settings.profiles}
    profile = {}
    for tensor in signature.inputs:
        opt = [int(d) for d in example[tensor.name].shape] if tensor.name in example else None
        if tensor.name in given:
            r = given[tensor.name]
            profile[tensor.name] = {"min": list(r.min), "opt": list(r.opt), "max": list(r.max)}
        elif opt is not None and tensor.dynamic_axes:
            if settings.static_shapes:
                profile[tensor.name] = {"min": opt, "opt": opt, "max": opt}
                continue
            low, high = list(opt), list(opt)
            for axis, name in tensor.dynamic_axes.items():
                low[axis] = 1
                if name.lower() in BATCH_NAMES or axis == 0 and "batch" in name.lower():
                    high[axis] = max(opt[axis], settings.max_batch)
            profile[tensor.name] = {"min": low, "opt": opt, "max": high}
    return profile


def _shapes(profile: dict, key: str) -> str:
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[key])}" for name, shapes in profile.items())


def trtexec_command(settings: dict) -> str:
    args = ["trtexec", f"--onnx={settings['onnx']}", "--saveEngine=engines/engine.plan"]
    if settings["profile"]:
        args += [f"--minShapes={_shapes(settings['profile'], 'min')}", f"--optShapes={_shapes(settings['profile'], 'opt')}",
                 f"--maxShapes={_shapes(settings['profile'], 'max')}"]
    if settings.get("workspace_bytes"):
        args.append(f"--memPoolSize=workspace:{settings['workspace_bytes'] // 2**20}M")
    args.append(f"--builderOptimizationLevel={settings['builder_optimization_level']}")
    args.append(f"--timingCacheFile={settings['timing_cache']}")
    if settings.get("hardware_compatibility", "none") != "none":
        args.append("--hardwareCompatibilityLevel=" + {"ampere_plus": "ampere+",
                                                       "same_compute_capability": "sameComputeCapability"}[
            settings["hardware_compatibility"]])
    if settings.get("version_compatible"):
        args.append("--versionCompatible")
    return " ".join(shlex.quote(a) for a in args)


def write_kit(kit: Path, onnx_name: str, plan: Plan, profile: dict, precision_details: dict) -> dict:
    """Write build.json, build_engine.py and trtexec.txt into `kit`; returns the build settings."""
    trt = plan.tensorrt
    settings = {
        "schema_version": KIT_SCHEMA, "onnx": onnx_name, "precision": plan.precision, "target": plan.target,
        "strongly_typed": True, "profile": profile,
        "workspace_bytes": trt.workspace_mib * 2**20 if trt.workspace_mib else None,
        "builder_optimization_level": trt.optimization_level,
        "hardware_compatibility": trt.hardware_compatibility, "version_compatible": trt.version_compatible,
        "timing_cache": "timing.cache",
        "rtx_compute_capabilities": list(trt.compute_capabilities) if trt.builder == "tensorrt-rtx" else [],
        "graph_precision": precision_details,
    }
    write_json(kit / "build.json", settings)
    shutil.copyfile(Path(__file__).with_name("build_engine.py"), kit / "build_engine.py")
    (kit / "trtexec.txt").write_text(
        "# The same build with trtexec (TensorRT 10.x: add --stronglyTyped; 11.x networks are always strongly\n"
        "# typed). Precision comes from the graph: no --fp16/--int8 flags.\n" + trtexec_command(settings) + "\n",
        encoding="utf-8")
    return settings

