"""kiln export (one artifact, or a matrix of targets x precisions) and kiln build (a plan of models)."""

from __future__ import annotations

import sys
from pathlib import Path

from kiln import __version__
from kiln.artifact.manifest import dumps
from kiln.config import PRECISIONS
from kiln.errors import UsageError


def _export_config(args):
    from kiln.config import (AccuracyBudget, BenchSettings, ConstantInput, DataSpec, ExportConfig, ImagePreprocessing, InputSpec,
                             LanguageModelSettings, ReportSettings, ShapeRange, TensorRTSettings, WeightCompression)

    prep = None
    if any(v is not None for v in (args.image_size, args.resize_shorter, args.layout, args.scale, args.mean, args.std)):
        base = ImagePreprocessing()
        prep = ImagePreprocessing(
            size=args.image_size or base.size, resize_shorter=args.resize_shorter, layout=args.layout or base.layout,
            scale=base.scale if args.scale is None else args.scale, mean=args.mean or base.mean,
            std=args.std or base.std, source="command line")
    try:
        return ExportConfig(
            source=args.source, out=args.out, target=args.target, precision=args.precision,
            inputs=tuple(InputSpec.parse(s) for s in args.input), task=args.task,
            check_shapes=tuple(InputSpec.parse(s) for s in args.check_shape),
            constants=tuple(ConstantInput.parse(s) for s in args.constant), zipmap_as_tensor=args.zipmap_as_tensor,
            calibration=DataSpec(path=args.calibration, limit=args.calibration_limit) if args.calibration else None,
            evaluation=DataSpec(path=args.evaluation, limit=args.eval_limit) if args.evaluation else None,
            synthetic_data=args.synthetic_data, sequence_length=args.sequence_length, image_preprocessing=prep,
            budget=AccuracyBudget(min_cosine=args.min_cosine, max_top1_disagreement=args.max_top1_disagreement,
                                  max_abs_error=args.max_abs_error, outputs=tuple(args.gate_output)),
            keep_fp32=tuple(args.keep_fp32), fallback=args.fallback, search_seconds=args.search_seconds,
            tuning_margin=args.tuning_margin,
            smooth_alpha=args.smooth_alpha,
            weight_compression=WeightCompression(group_size=args.group_size, ratio=args.ratio, symmetric=args.symmetric),
            compiled_cache=args.compiled_cache,
            tensorrt=TensorRTSettings(
                compute_capabilities=tuple(args.compute_capability),
                profiles=tuple(ShapeRange.parse(p) for p in args.profile), static_shapes=args.static_shapes,
                max_batch=args.max_batch, workspace_mib=args.workspace_mib,
                optimization_level=args.builder_optimization_level,
                hardware_compatibility=args.hardware_compatibility, version_compatible=args.version_compatible),
            exporter=args.exporter, opset=args.opset, export_rtol=args.export_rtol,
            trust_pickle=args.trust_pickle, trust_remote_code=args.trust_remote_code, threads=args.threads,
            bench=BenchSettings(warmup=args.warmup, min_runs=args.runs, min_seconds=args.min_seconds,
                                throughput_seconds=args.throughput_seconds),
            report=ReportSettings(analysis=not args.no_analysis, batch_sizes=args.batch_sizes,
                                  latency_budget_ms=args.latency_budget_ms, price_per_hour=args.price_per_hour,
                                  profile_runs=args.profile_runs),
            llm=LanguageModelSettings(new_tokens=args.new_tokens, rounds=args.generations, prompts=args.prompts,
                                      block_size=args.block_size, accuracy_level=args.accuracy_level,
                                      keep_embeddings=args.keep_embeddings, min_agreement=args.min_agreement,
                                      max_perplexity_increase=args.max_perplexity_increase,
                                      max_memory=args.max_memory, draft=args.draft),
            measure=not args.no_bench,
            bundle=_bundle_path(args), sign_key=args.sign_key, cache=not args.no_cache,
        )
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = exc.errors()[0] if hasattr(exc, "errors") else {"loc": (), "msg": str(exc)}
        where = ".".join(str(p) for p in first.get("loc", ()))
        if where == "precision":
            raise UsageError(f"unknown precision '{args.precision}'", hint=f"use one of {', '.join(PRECISIONS)}") from None
        raise UsageError(f"invalid option {where}: {first['msg']}", hint="see `kiln export --help`") from None


def _bundle_path(args) -> Path | None:
    if args.bundle is None:
        return None
    return args.out.with_name(args.out.name + ".tar.gz") if args.bundle is True else Path(args.bundle)


def cmd_export(args) -> int:
    from kiln.matrix import split_list
    from kiln.pipeline import run
    from kiln.progress import Progress

    targets, precisions = split_list(args.target), split_list(args.precision)
    if not targets or not precisions:
        raise UsageError("--target and --precision need at least one value", hint="e.g. --target onnxruntime,openvino")
    _executor(args)  # its options are checked before any work, also where no cluster is asked for
    if len(targets) * len(precisions) > 1 or args.cluster:
        return _cmd_matrix(args, targets, precisions)
    config = _export_config(args)
    progress = Progress(enabled=not args.quiet)
    progress.say(f"kiln {__version__}: {config.source} → {config.target} ({config.precision})")
    result = run(config, progress=progress)
    if args.json:
        print(dumps(result.report))
    elif not args.quiet:
        print((result.out / "report.md").read_text(encoding="utf-8"))
        progress.say(f"artifact: {result.out}")
    return 0


def _cmd_matrix(args, targets: list[str], precisions: list[str]) -> int:
    """Several targets or precisions: one artifact per cell under --out, one comparison table."""
    from kiln.build_plan import run_model_matrix
    from kiln.matrix import exit_code
    from kiln.progress import Progress
    from kiln.targets import find_target

    if args.bundle is not None:
        raise UsageError("--bundle writes one artifact's bundle, and a matrix (or --cluster) writes one per cell",
                         hint="export the recommended cell again with one --target and --precision and --bundle")
    for target in targets:
        find_target(target)  # an unknown name is bad input for the whole command, not a refused cell
    args.target, args.precision = targets[0], precisions[0]
    config = _export_config(args)
    progress = Progress(enabled=not args.quiet)
    progress.say(f"kiln {__version__}: {config.source} → {len(targets)} targets x {len(precisions)} precisions")
    if args.cluster and args.sign_key is not None:
        raise UsageError("--sign-key with --cluster: the nodes would sign with whatever file is at that path on them",
                         hint="build with --cluster, then sign the recommended cell with a local export")
    comparison = run_model_matrix(config, targets, precisions, progress, args.debug, _executor(args))
    if args.json:
        print(dumps(comparison))
    elif not args.quiet:
        print((config.out / "comparison.md").read_text(encoding="utf-8"))
        progress.say(f"artifacts and report.html: {config.out}")
    code = exit_code(comparison)
    if code:
        print(f"kiln: error: no artifact within the accuracy budget"
              f"{'' if code == 4 else ' (none could be built)'}; see {config.out / 'comparison.md'}", file=sys.stderr)
    return code


def _executor(args):
    if not args.cluster:
        if args.node_grace is not None:
            raise UsageError("--node-grace applies to --cluster runs", hint="drop it, or add --cluster ray|ADDRESS")
        return None
    from kiln.farm.ray_executor import LOST_GRACE, RayExecutor

    return RayExecutor(None if args.cluster == "ray" else args.cluster,
                       LOST_GRACE if args.node_grace is None else args.node_grace)


def cmd_build(args) -> int:
    """Every model of a plan as a comparison matrix under --out, and an index of them all."""
    from kiln.build_plan import index_exit_code, load_plan, run_plan
    from kiln.config import BenchSettings, ReportSettings
    from kiln.progress import Progress

    plan = load_plan(args.plan)
    if args.out.is_file():
        raise UsageError(f"output path {args.out} is a file", hint="give a folder path for --out")
    base = {"bench": BenchSettings(warmup=args.warmup, min_runs=args.runs, min_seconds=args.min_seconds,
                                   throughput_seconds=args.throughput_seconds),
            "report": ReportSettings(analysis=not args.no_analysis), "measure": not args.no_bench,
            "cache": not args.no_cache, "threads": args.threads}
    progress = Progress(enabled=not args.quiet)
    progress.say(f"kiln {__version__}: {args.plan} → {len(plan.models)} models")
    index = run_plan(plan, args.out, base, progress, args.debug, _executor(args))
    if args.json:
        print(dumps(index))
    elif not args.quiet:
        print((args.out / "index.md").read_text(encoding="utf-8"))
    code = index_exit_code(index)
    if code:
        print(f"kiln: error: {sum(m['exit_code'] != 0 for m in index['models'])} of {len(index['models'])} models have "
              f"no artifact within their budget or failed; see {args.out / 'index.md'}", file=sys.stderr)
    return code
