"""This host's compute and memory peaks, measured once with the runtime's own kernels and thread count, then cached.

The report places each model on a roofline; peaks from another library or another thread count would misplace it.
Every figure is the best run after warm-up (a peak is a maximum: neighbours only ever slow a run down), and a figure
is reported only when the runtime's compiled graph shows the kernel ran in the precision it claims.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import tempfile
import time
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np

from kiln._deps import require
from kiln.targets import detect_host

_METHOD_VERSION = 2  # part of host_key: bump when the method changes, so older caches are not reused
_FP32_MKN = (2048, 1024, 1024)  # measured on a 2-core SPR VM: 1024^3 ~10% below peak, 2048^3 no higher
_FAST_MKN = (2048, 2048, 2048)  # int8/bf16 (AMX, VNNI) run 5-10x faster: more work per call hides call overhead
_GEMM_BUDGET_S = 0.8
_DISTS = {"onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"), "openvino": ("openvino",)}
_NUMBERS = ("fp32_gflops", "int8_gops", "bf16_gflops", "memory_gbps")


def _best_ns(run, *, budget_s: float = _GEMM_BUDGET_S, min_runs: int = 5, warmup: int = 2) -> int:
    for _ in range(warmup):
        run()
    best, runs, end = None, 0, time.perf_counter_ns() + int(budget_s * 1e9)
    while runs < min_runs or time.perf_counter_ns() < end:
        t0 = time.perf_counter_ns()
        run()
        dt = time.perf_counter_ns() - t0
        best, runs = dt if best is None else min(best, dt), runs + 1
    return best


def _gemm_rate(mkn: tuple[int, int, int], ns: int) -> float:
    return round(2 * mkn[0] * mkn[1] * mkn[2] / ns, 1)  # ops per ns = G ops per s


def _cache_bytes(level: int, default: int) -> int:
    """Size of cpu0's cache at `level` (L2 is per core, L3 usually shared), from sysfs."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "level").read_text().strip() == str(level) and (index / "type").read_text().strip() != "Instruction":
                size = (index / "size").read_text().strip()
                return int(size.rstrip("KMG")) * units.get(size[-1], 1)
        except (OSError, ValueError):
            continue
    return default


def _l3_bytes() -> int:
    return _cache_bytes(3, 32 * 2**20)  # unknown: assume a large server L3


def cache_bandwidth(threads: int) -> dict:
    """Bandwidth when the working set stays in L2 or L3: a chain of 16 Adds over one buffer size, through ONNX
    Runtime (the figure is the hardware's, whichever runtime runs the model). Per-kernel dispatch is included,
    so these are lower estimates. Small models' weights live in cache across inferences: their memory ceiling
    is this, not DRAM's."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    chain = 16
    l2_total = _cache_bytes(2, 1 * 2**20) * threads
    l3 = _l3_bytes()
    levels = {"l2": (l2_total, l2_total // 4), "l3": (l3, min(l3 // 4, 64 * 2**20))}
    out = {}
    for name, (size, buffer_bytes) in levels.items():
        n = buffer_bytes // 4
        nodes = [helper.make_node("Add", [f"t{i}", "c"], [f"t{i + 1}"]) for i in range(chain)]
        graph = helper.make_graph(nodes, "stream", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [n])],
                                  [helper.make_tensor_value_info(f"t{chain}", TensorProto.FLOAT, [n])],
                                  [numpy_helper.from_array(np.array(1.0, np.float32), "c")])
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        sess = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                                                      ir_version=8).SerializeToString(), so,
                                    providers=["CPUExecutionProvider"])
        x = np.ones(n, np.float32)
        ns = _best_ns(lambda s=sess, x=x: s.run(None, {"t0": x}), budget_s=0.3, min_runs=10, warmup=3)
        out[name] = {"cache_bytes": size, "buffer_bytes": buffer_bytes, "gbps": round(2 * chain * x.nbytes / ns, 1)}
    return out


def _stream_bytes() -> tuple[int, str]:
    """8x L3 per buffer, so the stream comes from DRAM, not cache (capped so in + out fit in 40% of free memory)."""
    import psutil

    l3 = _l3_bytes()
    want = max(8 * l3, 256 * 2**20)
    nbytes = min(want, int(psutil.virtual_memory().available * 0.4) // 2) // 2**20 * 2**20
    note = f"{nbytes / 2**20:.0f} MiB float32 in and out, {nbytes / l3:.1f}x L3 ({l3 / 2**20:.0f} MiB)"
    return nbytes, note + (", capped by free memory" if nbytes < want else "")


def _buffer(nbytes: int) -> np.ndarray:
    mem = mmap.mmap(-1, nbytes)  # page-aligned
    if hasattr(mmap, "MADV_HUGEPAGE"):
        mem.madvise(mmap.MADV_HUGEPAGE)  # halves page-fault time for GiB-sized buffers
    return np.frombuffer(mem, np.float32)


def _memory(setup, label: str) -> tuple[float, str]:
    """Stream x + 1 -> y through the runtime (bytes = read + write); a single-thread numpy copy for comparison.

    `setup(n)` gives (run, x, y): the runtime may own x and y, so no third GiB-sized buffer exists."""
    nbytes, note = _stream_bytes()
    run, x, y = setup(nbytes // 4)
    x.fill(1.0)
    ns = _best_ns(run, budget_s=0, min_runs=3, warmup=1)
    numpy_ns = _best_ns(lambda: np.copyto(y, x), budget_s=0, min_runs=2, warmup=0)
    gbps, numpy_gbps = round(2 * x.nbytes / ns, 1), round(2 * x.nbytes / numpy_ns, 1)
    return gbps, f"{label} Add(x, 1.0) over {note}, bytes = read + write; numpy copy (1 thread): {numpy_gbps} GB/s"


def _measure_onnxruntime(threads: int) -> tuple[dict, dict]:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def session(nodes, inputs, outputs, inits, optimized_path: str | None = None):
        graph = helper.make_graph(nodes, "peak", inputs, outputs, [numpy_helper.from_array(a, n) for n, a in inits])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        if optimized_path:
            so.optimized_model_filepath = optimized_path
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])

    def runner(sess, x: np.ndarray, y: np.ndarray):
        """Inputs and outputs bound once: the timing is the kernel, not Python-side allocation or copies."""
        binding, values = sess.io_binding(), (ort.OrtValue.ortvalue_from_numpy(x), ort.OrtValue.ortvalue_from_numpy(y))
        binding.bind_ortvalue_input(sess.get_inputs()[0].name, values[0])
        binding.bind_ortvalue_output(sess.get_outputs()[0].name, values[1])
        return lambda: (sess.run_with_iobinding(binding), values, x, y)  # keep the bound memory alive

    vi = helper.make_tensor_value_info
    m, k, n = _FP32_MKN
    sess = session([helper.make_node("MatMul", ["A", "B"], ["Y"])], [vi("A", TensorProto.FLOAT, [m, k])],
                   [vi("Y", TensorProto.FLOAT, [m, n])], [("B", rng.standard_normal((k, n), dtype=np.float32))])
    a = rng.standard_normal((m, k), dtype=np.float32)
    fp32 = _gemm_rate(_FP32_MKN, _best_ns(runner(sess, a, np.empty((m, n), np.float32))))
    method = {"fp32": f"ONNX Runtime MatMul f32 [{m},{k}]x[{k},{n}] (constant B), intra_op={threads}, best run"}

    m, k, n = _FAST_MKN
    a8, b8 = rng.integers(0, 256, (m, k), dtype=np.uint8), rng.integers(-127, 128, (k, n), dtype=np.int8)
    zero_u8, zero_s8 = np.array(128, np.uint8), np.array(0, np.int8)
    sess = session([helper.make_node("MatMulInteger", ["A", "B", "az", "bz"], ["Y"])],
                   [vi("A", TensorProto.UINT8, [m, k])], [vi("Y", TensorProto.INT32, [m, n])],
                   [("B", b8), ("az", zero_u8), ("bz", zero_s8)])
    candidates = {"MatMulInteger": _gemm_rate(_FAST_MKN, _best_ns(runner(sess, a8, np.empty((m, n), np.int32))))}
    qdq = [helper.make_node("DequantizeLinear", ["A", "as", "az"], ["Af"]),
           helper.make_node("DequantizeLinear", ["B", "bs", "bz"], ["Bf"]),
           helper.make_node("MatMul", ["Af", "Bf"], ["Yf"]),
           helper.make_node("QuantizeLinear", ["Yf", "ys", "az"], ["Y"])]
    scales = [(name, np.array(s, np.float32)) for name, s in (("as", 0.02), ("bs", 0.01), ("ys", 0.5))]
    with tempfile.TemporaryDirectory(prefix="kiln-peaks-") as tmp:  # the fused graph, to check QLinearMatMul ran
        optimized = str(Path(tmp) / "qdq.onnx")
        sess = session(qdq, [vi("A", TensorProto.UINT8, [m, k])], [vi("Y", TensorProto.UINT8, [m, n])],
                       [("B", b8), ("az", zero_u8), ("bz", zero_s8), *scales], optimized)
        fused = "QLinearMatMul" in {node.op_type for node in onnx.load(optimized).graph.node}
    if fused:
        candidates["QDQ->QLinearMatMul"] = _gemm_rate(_FAST_MKN, _best_ns(runner(sess, a8, np.empty((m, n), np.uint8))))
    best = max(candidates, key=candidates.get)
    flags = sorted(f for f in detect_host().cpu_flags if f in ("amx_int8", "avx512_vnni", "avx_vnni"))
    method["int8"] = (f"ONNX Runtime {best} u8 x s8 [{m},{k}]x[{k},{n}], intra_op={threads}, best run "
                      f"(MLAS QGEMM; CPU int8 flags: {flags or 'none'}); "
                      f"fastest of {candidates}" + ("" if fused else "; QDQ MatMul was not fused to QLinearMatMul"))
    method["bf16"] = "null: ONNX Runtime's CPU provider has no bf16 GEMM kernels"

    def add_setup(size: int):
        sess = session([helper.make_node("Add", ["X", "c"], ["Y"])], [vi("X", TensorProto.FLOAT, [size])],
                       [vi("Y", TensorProto.FLOAT, [size])], [("c", np.array(1.0, np.float32))])
        x, y = _buffer(size * 4), _buffer(size * 4)
        return runner(sess, x, y), x, y

    memory, method["memory"] = _memory(add_setup, f"ONNX Runtime intra_op={threads}")
    return {"fp32_gflops": fp32, "int8_gops": candidates[best], "bf16_gflops": None, "memory_gbps": memory}, method


def _measure_openvino(threads: int) -> tuple[dict, dict]:
    ov = require("openvino", why="Measuring OpenVINO host peaks")
    ops = require("openvino.opset13", why="Measuring OpenVINO host peaks")
    core, rng = ov.Core(), np.random.default_rng(0)
    const = lambda v: ops.constant(np.array(v, np.float32))  # noqa: E731

    def compiled(output, param, precision: str = "f32"):
        return core.compile_model(ov.Model([output], [param]), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": precision})

    def runner(model, x: np.ndarray, y: np.ndarray):
        """Zero-copy input and output tensors: plain infer() would copy the output into a new array every run."""
        request = model.create_infer_request()
        tensors = (ov.Tensor(x, shared_memory=True), ov.Tensor(y, shared_memory=True))
        request.set_input_tensor(tensors[0])
        request.set_output_tensor(tensors[1])
        return lambda: (request.infer(share_inputs=True, share_outputs=True), tensors, x, y)  # keep the memory alive

    def gemm_ran_as(model) -> tuple[str, str]:
        """(runtimePrecision, primitiveType) of the GEMM in the compiled graph: what really ran, not what was asked."""
        for op in model.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
                return info["runtimePrecision"].astype(str), info["primitiveType"].astype(str)
        return "none", "no FullyConnected/MatMul node"

    def gemm(label: str, mkn, precision: str, expect: tuple[str, ...], a: np.ndarray, make_a=lambda p: p,
             quantize=lambda w: w) -> tuple[float | None, str]:
        m, k, n = mkn
        param = ops.parameter([m, k], a.dtype, name="A")
        b = np.rint(rng.standard_normal((k, n)) * 40).clip(-127, 127).astype(np.float32)  # int8-representable
        model = compiled(ops.matmul(make_a(param), quantize(ops.constant(b)), False, False), param, precision)
        ran, primitive = gemm_ran_as(model)
        if ran not in expect:
            return None, f"null: {label} ran as {ran} ({primitive}), not {'/'.join(expect)}"
        rate = _gemm_rate(mkn, _best_ns(runner(model, a, np.empty((m, n), np.float32))))
        return rate, f"{label} [{m},{k}]x[{k},{n}] (constant B), INFERENCE_NUM_THREADS={threads}, best run; " \
                     f"ran as {ran} ({primitive})"

    peaks, method, flags = {}, {}, detect_host().cpu_flags
    peaks["fp32_gflops"], method["fp32"] = gemm("OpenVINO CPU MatMul f32", _FP32_MKN, "f32", ("f32",),
                                                rng.standard_normal(_FP32_MKN[:2], dtype=np.float32))
    if flags & {"avx512_bf16", "amx_bf16"}:
        a = rng.standard_normal(_FAST_MKN[:2], dtype=np.float32)
        peaks["bf16_gflops"], method["bf16"] = gemm("OpenVINO CPU MatMul, INFERENCE_PRECISION_HINT=bf16", _FAST_MKN,
                                                    "bf16", ("bf16",), a)
    else:
        peaks["bf16_gflops"], method["bf16"] = None, "null: the CPU has neither avx512_bf16 nor amx_bf16"

    def fq(node, low: float, high: float, levels: int):
        return ops.fake_quantize(node, const(low), const(high), const(low), const(high), levels)

    amx = "amx_int8 present" if "amx_int8" in flags else "no amx_int8"
    peaks["int8_gops"], method["int8"] = gemm(
        f"OpenVINO CPU MatMul with FakeQuantize on both inputs (LPT, u8 x i8; {amx})", _FAST_MKN, "f32", ("u8", "i8"),
        rng.integers(0, 256, _FAST_MKN[:2], dtype=np.uint8),  # u8 in: the activation FakeQuantize is a no-op
        make_a=lambda p: fq(ops.convert(p, "f32"), 0.0, 255.0, 256), quantize=lambda w: fq(w, -127.0, 127.0, 255))

    def add_setup(size: int):
        """OpenVINO's own input and output tensors: it allocates the output at compile time anyway."""
        param = ops.parameter([size], np.float32, name="X")
        request = compiled(ops.add(param, const(1.0)), param).create_infer_request()
        run = lambda: request.infer(share_inputs=True, share_outputs=True)  # noqa: E731
        return run, request.get_input_tensor().data, request.get_output_tensor().data

    peaks["memory_gbps"], method["memory"] = _memory(add_setup, f"OpenVINO CPU INFERENCE_NUM_THREADS={threads}")
    return peaks, method


_MEASURERS = {"onnxruntime": _measure_onnxruntime, "openvino": _measure_openvino}


def _runtime_version(runtime: str) -> str:
    for dist in _DISTS[runtime]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return require(runtime, why=f"Measuring {runtime} host peaks").__version__


def _host_key(runtime: str, version: str, threads: int) -> str:
    payload = {"host": detect_host().fingerprint(), "runtime": runtime, "version": version, "threads": threads,
               "method_version": _METHOD_VERSION}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _default_cache_dir() -> Path:
    if os.environ.get("KILN_CACHE_DIR"):
        return Path(os.environ["KILN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "kiln"


def _load(path: Path, runtime: str, version: str, threads: int, key: str) -> dict | None:
    """The cached peaks, or None when absent, corrupt, or not what this call asks for (then they are re-measured)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or (data.get("runtime"), data.get("runtime_version"), data.get("threads"),
                                      data.get("host_key")) != (runtime, version, threads, key):
        return None
    numbers_ok = all(data.get(f) is None or (isinstance(data[f], (int, float)) and data[f] > 0) for f in _NUMBERS)
    if not (numbers_ok and isinstance(data.get("method"), dict) and isinstance(data.get("measured_at"), str)
            and isinstance(data.get("seconds"), (int, float))):
        return None
    return {**data, "cached": True}


def _write_atomic(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)  # only left when something failed


def host_peaks(runtime: str, threads: int, *, cache_dir: Path | None = None, refresh: bool = False) -> dict:
    """Peaks of this host through `runtime` at `threads`: from the cache, or measured (~10 s) and cached."""
    if runtime not in _MEASURERS:
        raise ValueError(f"unknown runtime {runtime!r}; expected one of {sorted(_MEASURERS)}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    version = _runtime_version(runtime)
    key = _host_key(runtime, version, threads)
    path = Path(cache_dir if cache_dir is not None else _default_cache_dir()) / f"host-peaks-{key}.json"
    if not refresh and (cached := _load(path, runtime, version, threads, key)) is not None:
        return cached
    start = time.perf_counter_ns()
    peaks, method = _MEASURERS[runtime](threads)
    caches = cache_bandwidth(threads)
    method["cache"] = "ONNX Runtime chain of 16 Add over a buffer of a quarter of the cache level, best run"
    result = {"runtime": runtime, "runtime_version": version, "threads": threads, **{f: peaks[f] for f in _NUMBERS},
              "cache_gbps": caches, "method": method, "host_key": key,
              "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "seconds": round((time.perf_counter_ns() - start) / 1e9, 2)}
    _write_atomic(path, result)
    return {**result, "cached": False}
