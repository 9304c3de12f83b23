"""`kiln bench ARTIFACT --concurrency 1,4,8`: a language-model artifact served by its engine, N requests at once.

kiln's own generator serves one request at a time; the engines batch. For an OpenVINO artifact, openvino-genai's
ContinuousBatchingPipeline loads the artifact as kiln wrote it (llm/serving.py), with the settings under which its
greedy tokens are the artifact's own. For an ONNX Runtime artifact, onnxruntime-genai's og.Engine (on CPU it batches
up to 4 requests per step, statically: paged attention is CUDA/WebGPU only). At each level N, N requests (different prompts, each forced to `new_tokens`)
are submitted together and the same N one at a time through the same pipeline: aggregate tokens/s of both, each
request's time to first token and inter-token latency (the engine's per-request metrics), and how many requests got
exactly the tokens they get alone. Levels and rounds are interleaved, and the best round is kept: a shared machine
moves wall time between minutes, so only ratios within one run mean anything.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from kiln.errors import MissingDependencyError, UnsupportedTargetError

SCHEDULER_CACHE_GB = 1  # the paged KV cache; 1 GB holds 8 requests of SmolLM2-135M at 4k tokens


def random_prompts(count: int, vocab_size: int, seed: int = 0) -> list[list[int]]:
    """`count` different prompts of 32-64 token ids (speed does not depend on the words; identity is checked on
    whatever the tokens are)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab_size, int(rng.integers(32, 65))).tolist() for _ in range(count)]


class OpenVinoServer:
    """openvino-genai's ContinuousBatchingPipeline."""

    engine = "openvino-genai ContinuousBatchingPipeline"

    def __init__(self, root: Path, settings: dict, threads: int, new_tokens: int):
        try:
            import openvino_genai
        except ImportError:
            raise MissingDependencyError("serving the artifact needs openvino-genai, which is not installed",
                                         hint="pip install 'modelkiln[serving]'") from None
        scheduler = openvino_genai.SchedulerConfig()
        scheduler.cache_size = SCHEDULER_CACHE_GB
        self.pipe = openvino_genai.ContinuousBatchingPipeline(str(root), scheduler, "CPU",
                                                              {**settings, "INFERENCE_NUM_THREADS": str(threads)})
        self.config = openvino_genai.GenerationConfig()
        self.config.max_new_tokens = self.config.min_new_tokens = new_tokens
        self.config.do_sample = False

    def serve(self, prompts) -> tuple[float, list[list[int]], list[tuple[float, float]]]:
        """All `prompts` at once: (wall seconds, tokens per request, (TTFT ms, inter-token ms) per request)."""
        import openvino as ov

        tensors = [ov.Tensor(np.array([p], dtype=np.int64)) for p in prompts]
        start = time.perf_counter()
        results = self.pipe.generate(tensors, [self.config] * len(tensors))
        wall = time.perf_counter() - start
        return (wall, [list(r.m_generation_ids[0]) for r in results],
                [(r.perf_metrics.get_ttft().mean, r.perf_metrics.get_tpot().mean) for r in results])


class OnnxruntimeServer:
    """onnxruntime-genai's og.Engine: requests begin turns, engine.run steps every scheduled one."""

    engine = "onnxruntime-genai Engine"

    def __init__(self, root: Path, new_tokens: int):
        try:
            import onnxruntime_genai as og
        except ImportError:
            raise MissingDependencyError("serving the artifact needs onnxruntime-genai, which is not installed",
                                         hint="pip install 'modelkiln[llm]'") from None
        self.og, self.new_tokens = og, new_tokens
        self.pipe = og.Engine(og.Model(str(root)))
        self.events = self.pipe.create_event_buffer(64)
        self.batch = self.pipe.get_capabilities().configured_max_batch_size

    def serve(self, prompts) -> tuple[float, list[list[int]], list[tuple[float, float]]]:
        og = self.og
        requests = []
        start = time.perf_counter()
        for prompt in prompts:
            request = self.pipe.create_request()
            options = og.TurnOptions(request)
            options.set_do_sample(False)
            options.set_max_generated_tokens(self.new_tokens)
            options.set_min_generated_tokens(self.new_tokens)
            request.begin_turn(np.asarray(prompt, dtype=np.int32), options)
            requests.append((request, options))
        tokens, times = [[] for _ in prompts], [[] for _ in prompts]
        while self.pipe.has_pending_requests():
            for event in self.pipe.run(self.events):
                index = next(i for i, (r, _) in enumerate(requests) if r is event.request)
                if event.flags & og.EngineEventFlags.FAILED:
                    raise RuntimeError(f"onnxruntime-genai failed a request (error {event.error_code})")
                if event.flags & og.EngineEventFlags.TOKEN:
                    tokens[index].append(int(event.token))
                    times[index].append(time.perf_counter() - start)
        wall = time.perf_counter() - start
        for request, _ in requests:
            request.close()
        return wall, tokens, [(t[0] * 1000, (t[-1] - t[0]) * 1000 / max(1, len(t) - 1)) for t in times]


def server_for(root: Path, report: dict, threads: int, new_tokens: int):
    """The artifact's serving engine, loaded as the export checked it."""
    served = report.get("serving") or {}
    backend = report["target"]["backend"]
    if backend not in ("openvino", "onnxruntime"):
        raise UnsupportedTargetError(f"--concurrency measures OpenVINO and ONNX Runtime artifacts through their "
                                     f"serving engines; this one is {backend}",
                                     hint="measure one request with kiln bench")
    if not served.get("loads"):
        raise UnsupportedTargetError(f"{served.get('engine', 'the serving engine')} did not load this artifact at "
                                     f"export" + (f" ({served['reason']})" if served.get("reason") else ""),
                                     hint="export it again with the serving extra installed")
    if backend == "openvino":
        return OpenVinoServer(root, served["settings"], threads, new_tokens)
    return OnnxruntimeServer(root, new_tokens)


def measure_concurrency(root: Path, report: dict, levels: list[int], prompts: list[list[int]], new_tokens: int,
                        threads: int, rounds: int = 2) -> dict:
    """The throughput-against-concurrency curve of the artifact at `root` (its report.json as `report`)."""
    if len(prompts) < max(levels):
        raise ValueError(f"{max(levels)} requests need as many prompts, {len(prompts)} given")
    server = server_for(root, report, threads, new_tokens)
    server.serve(prompts[:1])  # warm-up: the first request compiles the model
    rows = {n: {"together": [], "alone": [], "ttft": [], "itl": [], "identical": None} for n in levels}
    for _ in range(rounds):
        for n in levels:
            wall, together, metrics = server.serve(prompts[:n])
            alone_wall, alone = 0.0, []
            for prompt in prompts[:n]:
                seconds, tokens, _ = server.serve([prompt])
                alone_wall, alone = alone_wall + seconds, alone + tokens
            row = rows[n]
            row["together"].append(n * new_tokens / wall)
            row["alone"].append(n * new_tokens / alone_wall)
            row["ttft"] += [m[0] for m in metrics]
            row["itl"] += [m[1] for m in metrics]
            row["identical"] = min(sum(a == b for a, b in zip(together, alone)),
                                   n if row["identical"] is None else row["identical"])
    curve = []
    for n, row in rows.items():
        best, base = max(row["together"]), max(row["alone"])
        curve.append({"requests": n, "tokens_per_s": round(best, 2), "one_at_a_time_tokens_per_s": round(base, 2),
                      "speedup": round(best / base, 3),
                      "ttft_ms": {"p50": float(np.percentile(row["ttft"], 50)),
                                  "p99": float(np.percentile(row["ttft"], 99))},
                      "inter_token_ms": {"p50": float(np.percentile(row["itl"], 50)),
                                         "p99": float(np.percentile(row["itl"], 99))},
                      "identical_to_alone": row["identical"]})
    served = report["serving"]
    return {"engine": server.engine, "version": served.get("version"), "settings": served.get("settings", {}),
            **({"batch_per_step": server.batch} if hasattr(server, "batch") else {}), "threads": threads, "new_tokens": new_tokens, "rounds": rounds,
            "levels": curve}


def render_curve(curve: dict) -> str:
    lines = [f"{curve['engine']} {curve['version']}, {curve['threads']} threads, {curve['new_tokens']} new tokens per "
             f"request, best of {curve['rounds']} interleaved rounds",
             "| requests | one at a time, tok/s | together, tok/s | speedup | TTFT p50 / p99 ms | "
             "inter-token p50 / p99 ms | tokens identical to alone |", "|---|---|---|---|---|---|---|"]
    for row in curve["levels"]:
        lines.append(f"| {row['requests']} | {row['one_at_a_time_tokens_per_s']:.1f} | {row['tokens_per_s']:.1f} | "
                     f"{row['speedup']:.2f}x | {row['ttft_ms']['p50']:.0f} / {row['ttft_ms']['p99']:.0f} | "
                     f"{row['inter_token_ms']['p50']:.1f} / {row['inter_token_ms']['p99']:.1f} | "
                     f"{row['identical_to_alone']} of {row['requests']} |")
    return "\n".join(lines)
