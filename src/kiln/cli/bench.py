"""kiln bench: re-measure an artifact on this machine (latency, a language model's decode, its serving figures)."""

from __future__ import annotations

from kiln.artifact.manifest import dumps
from kiln.errors import UsageError


def cmd_bench(args) -> int:
    from kiln.bench_artifact import bench_artifact
    from kiln.config import BenchSettings

    if args.concurrency is not None:
        return _bench_concurrency(args)
    if args.serving:
        return _bench_serving(args)
    result = bench_artifact(args.artifact, BenchSettings(warmup=args.warmup, min_runs=args.runs,
                                                         min_seconds=args.min_seconds,
                                                         throughput_seconds=args.throughput_seconds), threads=args.threads)
    if args.json:
        print(dumps(result))
    elif "language_model" in result:
        lm = result["language_model"]
        print(f"{args.artifact}: time to first token {lm['ttft_ms']:.1f} ms ({lm['prompt_tokens']} tokens), "
              f"{lm['decode_tokens_per_s']:.1f} tokens/s decoding {lm['new_tokens']} tokens (median of {lm['rounds']})")
    else:
        lat = result["latency_ms"]
        print(f"{args.artifact}: p50 {lat['p50']:.3f} ms, p90 {lat['p90']:.3f}, p99 {lat['p99']:.3f}, "
              f"mean {lat['mean']:.3f} ± {lat['std']:.3f} ms over {result['runs']} runs; "
              f"{result['throughput_per_s']:.1f}/s; load {result['load_ms']:.0f} ms, "
              f"first {result['first_inference_ms']:.1f} ms; threads {_threads(result['runtime_settings'])}")
        if result.get("throughput_mode"):
            tm = result["throughput_mode"]
            print(f"THROUGHPUT hint: {tm['throughput_per_s']:.1f}/s with {tm['streams']} streams and "
                  f"{tm['infer_requests']} async requests, executes in {tm['execution_precision']}")
        if result.get("recorded"):
            print(f"recorded at export: p50 {result['recorded']['p50']:.3f} ms, p99 {result['recorded']['p99']:.3f} ms")
    return 0


def _bench_concurrency(args) -> int:
    from kiln.bench_artifact import bench_concurrency
    from kiln.llm.concurrency import render_curve

    try:
        levels = sorted({int(x) for x in args.concurrency.split(",") if x.strip()})
    except ValueError:
        levels = []
    if not levels or levels[0] < 1 or levels[-1] > 64:
        raise UsageError(f"--concurrency '{args.concurrency}' is not a list of request counts from 1 to 64",
                         hint="e.g. --concurrency 1,4,8")
    result = bench_concurrency(args.artifact, levels, args.new_tokens, args.threads)
    print(dumps(result) if args.json else f"{args.artifact}: " + render_curve(result["concurrency"]))
    return 0


def _bench_serving(args) -> int:
    from kiln.bench_artifact import bench_serving
    from kiln.llm.serving_bench import render

    result = bench_serving(args.artifact, args.threads)
    print(dumps(result) if args.json else f"{args.artifact}:" + "\n".join(render(result["serving"])))
    return 0


def _threads(settings: dict):
    return settings.get("intra_op_num_threads") or settings.get("config", {}).get("INFERENCE_NUM_THREADS")
