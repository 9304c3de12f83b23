"""What the manifest says about byte-for-byte reproducibility, per backend, as measured here.

Measured by exporting the same inputs twice with the cache off and comparing every file
(tests/integration/test_bundles.py; docs/reliability.md): the ONNX exporters (TorchScript and dynamo),
ONNX Runtime's quantizer and kiln's passes, OpenVINO's converter and NNCF (int8 and int4 weight
compression) wrote identical files, and so did TensorRT-RTX building engines ahead of time. TensorRT
on a GPU times tactics and keeps the fastest, so its engines differ between builds; build_result.json
records build timings.
"""

from __future__ import annotations

from kiln.config import Plan


def reproducibility(plan: Plan, engine: dict | None = None) -> dict:
    notes = ["the same inputs, settings, toolchain versions and host give the same files; report.* hold "
             "this run's measurements and are neither hashed here nor bundled"]
    varies: list[str] = []
    if plan.backend == "tensorrt" and engine and engine.get("built"):
        varies.append("tensorrt/engines/build_result.json")
        notes.append("tensorrt/engines/build_result.json records build timings")
        if engine.get("builder") == "tensorrt":
            varies.append("tensorrt/engines/*.plan")
            notes.append("TensorRT engines differ between builds: the builder times tactics on the GPU and keeps "
                         "the fastest")
        else:
            notes.append("TensorRT-RTX engines built ahead of time (no GPU timing) were identical across builds here")
    if plan.backend == "openvino" and plan.compiled_cache:
        notes.append("the compiled-model cache (openvino/cache/*.blob) is written by the OpenVINO plugin for this "
                     "device; kiln has not shown it to be reproducible")
        varies.append("openvino/cache/*")
    return {"deterministic": not varies, "varies": varies, "notes": notes}
