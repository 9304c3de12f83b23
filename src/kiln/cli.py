"""The `kiln` command: a thin layer over the API. Imports nothing heavy until a command runs."""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
from pathlib import Path

from kiln import __version__
from kiln.artifact.manifest import dumps
from kiln.config import PRECISIONS
from kiln.errors import KilnError, UsageError

_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)
EPILOG = ("exit codes: 0 ok, 1 bug, 2 bad input, 3 missing dependency/unsupported, 4 a gate failed (accuracy budget, "
          "regression), 5 export failed, 6 verification failed")


class _Parser(argparse.ArgumentParser):
    """argparse, but bad options give one line and exit 2 like every other input error."""

    def error(self, message: str):
        self.exit(2, f"kiln: error: {message} (see `{self.prog} --help`)\n")


def _pair(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) == 1:
        parts = parts * 2
    try:
        height, width = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size like 224 or 224x224") from None
    return height, width


def _triple(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not three numbers like 0.485,0.456,0.406") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"'{text}' is not three numbers like 0.485,0.456,0.406")
    return values  # type: ignore[return-value]


def _number(kind, minimum, strict: bool = False):
    """An argparse type: a number of `kind` at least (or, strict, above) `minimum`, else one clear line."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a{'n integer' if kind is int else ' number'}") from None
        if value < minimum or (strict and value == minimum) or value != value:
            raise argparse.ArgumentTypeError(f"'{text}' must be {'above' if strict else 'at least'} {minimum}")
        return value
    return parse


def _memory(text: str) -> int:
    units = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    value, unit = text.strip().upper().rstrip("IB").rstrip("B"), ""
    if value and value[-1] in units:
        value, unit = value[:-1], value[-1]
    try:
        size = float(value) * units[unit]
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size like 16G or 512M") from None
    if size < 1:
        raise argparse.ArgumentTypeError(f"'{text}' must be positive")
    return int(size)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of batch sizes like 1,2,4,8") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a list of positive batch sizes like 1,2,4,8")
    return sizes


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kiln", description="Turn a trained model into a measured, deployable artifact.",
                     epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"kiln {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ex = sub.add_parser("export", help="export, compile, validate and measure a model", epilog=EPILOG)
    ex.add_argument("source", help="an .onnx file, a .pt2 program, a Hugging Face folder, or package.module:callable")
    ex.add_argument("--target", "-t", default="onnxruntime", help="target name or alias (see `kiln targets`)")
    ex.add_argument("--precision", "-p", default="fp32", help=f"one of {', '.join(PRECISIONS)}; int8 is static (calibrated). `kiln targets` lists what each target runs")
    ex.add_argument("--out", "-o", required=True, type=Path, help="artifact folder to write (replaced atomically)")
    ex.add_argument("--input", action="append", default=[], metavar="NAME=DIMS[:DTYPE]",
                    help="an input spec, e.g. x=batch=1,3,224,224:float32 (repeat per input)")
    ex.add_argument("--check-shape", action="append", default=[], metavar="NAME=DIMS",
                    help="a second shape the exported graph is checked at against the source, e.g. x=1,3,640,640 "
                         "(default: a sample of your data with another shape, else the export shape with its "
                         "dynamic dims doubled)")
    ex.add_argument("--constant", action="append", default=[], metavar="NAME=VALUE",
                    help="ONNX source: fix an input to a value in the exported graph (e.g. sr=16000); branches that "
                         "depend only on it are folded away (If), so quantizers and OpenVINO see the compute")
    ex.add_argument("--zipmap-as-tensor", action="store_true",
                    help="ONNX source: scikit-learn's ZipMap output (a sequence of maps) becomes the probability "
                         "tensor it wraps, columns in the model's class order")
    ex.add_argument("--task", help="Hugging Face task when config.json does not say")
    data = ex.add_argument_group("data")
    data.add_argument("--calibration", type=Path, help="calibration data: image folder, .npz/.npy, or .txt lines")
    data.add_argument("--calibration-limit", type=int, help="use at most this many calibration samples")
    data.add_argument("--eval", dest="evaluation", type=Path, help="evaluation data (same forms as --calibration)")
    data.add_argument("--eval-limit", type=int, help="use at most this many evaluation samples")
    data.add_argument("--synthetic-data", action="store_true",
                      help="allow random data where none is given (accuracy figures then mean nothing)")
    data.add_argument("--sequence-length", type=int, default=128, help="text: pad/truncate to this many tokens")
    data.add_argument("--image-size", type=_pair, help="image: HxW fed to the model (default from the model or 224)")
    data.add_argument("--resize-shorter", type=int, help="image: resize the shorter side to this, then centre-crop")
    data.add_argument("--layout", choices=("NCHW", "NHWC"), help="image tensor layout")
    data.add_argument("--scale", type=float, help="image: multiply uint8 pixels by this (default 1/255)")
    data.add_argument("--mean", type=_triple, help="image: per-channel mean subtracted after scaling")
    data.add_argument("--std", type=_triple, help="image: per-channel std divided by after the mean")
    gate = ex.add_argument_group("accuracy gate")
    gate.add_argument("--min-cosine", type=float, help="fail (exit 4) if any output's per-sample cosine is lower")
    gate.add_argument("--max-top1-disagreement", type=float, help="fail if top-1 disagrees on more than this fraction")
    gate.add_argument("--max-abs-error", type=float, help="fail if any output's max abs error is larger")
    gate.add_argument("--gate-output", action="append", default=[], metavar="NAME",
                      help="outputs the gate applies to (default: the model's primary outputs, else all)")
    gate.add_argument("--keep-fp32", action="append", default=[], metavar="NODE",
                      help="keep nodes whose name contains NODE out of quantization (repeat)")
    gate.add_argument("--fallback", action="store_true",
                      help="int8/fp8: keep the units that break the budget in float, found by search on a tuning "
                           "split of the calibration data (--precision auto does this at the target's int8)")
    gate.add_argument("--search-seconds", type=float, default=150.0,
                      help="wall-clock limit of the fallback search; on timeout the best point within budget is used")
    gate.add_argument("--tuning-margin", type=float, default=0.5,
                      help="share of the budget's slack the search leaves unused on its tuning split, against the "
                           "noise of a small split (0.5: cosine 0.99 is searched at 0.995; 0: at the budget, as "
                           "NNCF's accuracy control does)"),
    gate.add_argument("--smooth-alpha", type=float, default=None,
                      help="int8 on transformers: SmoothQuant strength from calibration data (0 turns it off; "
                           "default 0.8, or chosen on the tuning split when a TensorRT graph is searched per unit)")
    wc = ex.add_argument_group("weight-only precisions (int8-weights, int4-weights)")
    wc.add_argument("--group-size", type=int, help="int4: weights sharing one scale (default 128; -1: per channel)")
    wc.add_argument("--ratio", type=float, help="int4: share of weight layers in int4, the rest int8 (default 1.0)")
    sym = wc.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="symmetric", action="store_true", default=None,
                     help="symmetric weights (default for int4, except language models: asymmetric)")
    sym.add_argument("--asymmetric", dest="symmetric", action="store_false", help="asymmetric weights (default for int8)")
    lm = ex.add_argument_group("language models (Hugging Face decoder folders: Llama, Qwen2, Phi-3, Mistral)")
    lm.add_argument("--new-tokens", type=_number(int, 2), default=128, help="tokens decoded per timed generation "
                    "(the prompt is --sequence-length tokens of the --eval text)")
    lm.add_argument("--generations", type=_number(int, 1), default=3, help="timed generations (median reported)")
    lm.add_argument("--prompts", type=_number(int, 1), default=8, help="eval lines whose greedy continuations are "
                    "compared with the torch model's")
    lm.add_argument("--block-size", type=_number(int, 16), help="ONNX Runtime int4/int8: weights per scale "
                    "(power of 2; default 32 for int4, 128 for int8)")
    lm.add_argument("--accuracy-level", type=int, choices=(0, 1, 2, 3, 4), default=4,
                    help="ONNX Runtime MatMulNBits compute type (4: int8 with VNNI, fastest here; 0: the kernel's own)")
    lm.add_argument("--keep-embeddings", action="store_true",
                    help="ONNX Runtime int4: leave the token embedding in fp32 (OpenVINO keeps the embedding and the "
                         "LM head in int8)")
    lm.add_argument("--min-agreement", type=float, help="fail (exit 4) if greedy agreement with torch is lower")
    lm.add_argument("--max-perplexity-increase", type=float, metavar="X",
                    help="fail (exit 4) if perplexity on the --eval text exceeds torch's by more than this share "
                         "(0.05 = 5 %%)")
    lm.add_argument("--draft", type=Path, metavar="ARTIFACT",
                    help="a smaller kiln language-model artifact of the same target and tokenizer, shipped in draft/ "
                         "for speculative decoding and measured against plain decoding")
    lm.add_argument("--max-memory", type=_memory, metavar="SIZE",
                    help="refuse a model whose export would need more memory than this (e.g. 16G)")
    ex.add_argument("--compiled-cache", action="store_true",
                    help="OpenVINO: ship the compiled model for the measured device in the artifact (faster load)")
    nv = ex.add_argument_group("NVIDIA targets (TensorRT build kit and engines)")
    nv.add_argument("--compute-capability", action="append", default=[], metavar="X.Y",
                    help="tensorrt-rtx: build an engine for this compute capability (repeat; default 8.6, 8.9, 12.0)")
    nv.add_argument("--profile", action="append", default=[], metavar="NAME=MIN:OPT:MAX",
                    help="optimization profile for one input, shapes like 1x128 (repeat)")
    nv.add_argument("--static-shapes", action="store_true", help="build for the example shapes only")
    nv.add_argument("--max-batch", type=int, default=16, help="default max for batch axes in the profile")
    nv.add_argument("--workspace-mib", type=int, help="builder workspace memory limit")
    nv.add_argument("--builder-optimization-level", type=int, default=3, help="0-5 (TensorRT's default 3)")
    nv.add_argument("--hardware-compatibility", choices=("none", "ampere_plus", "same_compute_capability"),
                    default="none", help="engines that run on other GPUs of the family (slower)")
    nv.add_argument("--version-compatible", action="store_true", help="engines later TensorRT versions can run")
    exp = ex.add_argument_group("export")
    exp.add_argument("--exporter", choices=("auto", "dynamo", "torchscript"), default="auto")
    exp.add_argument("--opset", type=int, help="ONNX opset (default: 18, or 17 for Hugging Face encoders)")
    exp.add_argument("--export-rtol", type=_number(float, 0.0), default=1e-3, help="export check: tolerance relative to output scale")
    exp.add_argument("--trust-pickle", action="store_true", help="allow loading pickled modules (runs their code)")
    exp.add_argument("--trust-remote-code", action="store_true", help="allow Hugging Face folders' own Python code")
    _bench_options(ex)
    ex.add_argument("--no-bench", action="store_true", help="skip latency measurement")
    ex.add_argument("--cluster", metavar="ray|ADDRESS",
                    help="a matrix: build each cell as a Ray task on a node with its target's hardware (`ray` joins "
                         "RAY_ADDRESS or the cluster running here, else starts one; ADDRESS is HOST:PORT). Needs "
                         "kiln[ray]; nodes publish `kiln node-labels`")
    _node_grace_option(ex)
    de = ex.add_argument_group("delivery")
    de.add_argument("--bundle", nargs="?", const=True, metavar="PATH",
                    help="also write a reproducible .tar.gz of the artifact (default: OUT.tar.gz)")
    de.add_argument("--sign-key", type=Path, metavar="PEM", help="sign manifest.json with this Ed25519 private key")
    de.add_argument("--no-cache", action="store_true",
                    help="neither reuse nor store stage results (cache: $KILN_CACHE_DIR or ~/.cache/kiln)")
    rep = ex.add_argument_group("report (runs after the timed runs, in sessions of its own)")
    rep.add_argument("--no-analysis", action="store_true",
                     help="skip the source-model baseline, the runtime profile, the roofline and the batch sweep")
    rep.add_argument("--batch-sizes", type=_sizes, default=(1, 2, 4, 8, 16, 32), metavar="1,2,4,...",
                     help="batch sizes swept where the model has a dynamic batch axis")
    rep.add_argument("--latency-budget-ms", type=float, help="batch sweep: the largest batch whose p99 stays within this")
    rep.add_argument("--price-per-hour", type=float, help="the machine's price per hour: cost per 1M inferences")
    rep.add_argument("--profile-runs", type=int, default=20, help="profiled inferences per artifact")
    _output_options(ex)

    be = sub.add_parser("bench", help="re-measure an artifact with its recorded runtime settings", epilog=EPILOG)
    be.add_argument("artifact", type=Path)
    be.add_argument("--concurrency", metavar="N,N,...", help="a language-model artifact served by its engine with N "
                    "requests at once (e.g. 1,4,8): tokens/s, TTFT and inter-token latency against one at a time")
    be.add_argument("--serving", action="store_true", help="a language-model artifact: prompt lookup in kiln's "
                    "generator and the engine, the concurrency curve 1,2,4,8 and the recommendation (as an export "
                    "measures them)")
    be.add_argument("--new-tokens", type=_number(int, 2), default=64, help="--concurrency: tokens per request")
    _bench_options(be)
    _output_options(be)

    bd = sub.add_parser("build-engine", help="build the TensorRT engine of an NVIDIA artifact, on the device",
                        epilog=EPILOG)
    bd.add_argument("artifact", type=Path)
    bd.add_argument("--builder", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto")
    bd.add_argument("--compute-capability", action="append", metavar="X.Y", help="TensorRT-RTX only (repeat)")
    bd.add_argument("--out", type=Path, help="where engines go (default: ARTIFACT/tensorrt/engines)")
    _output_options(bd)

    bl = sub.add_parser("build-llama-cpp", help="build the pinned llama.cpp once for this CPU (for --target llama.cpp)",
                        epilog=EPILOG)
    bl.add_argument("--force", action="store_true", help="build again even if this CPU's build exists")
    _output_options(bl)

    ve = sub.add_parser("verify", help="check an artifact folder or bundle against its manifest (and signature)",
                        epilog=EPILOG)
    ve.add_argument("artifact", type=Path, help="an artifact folder or a --bundle .tar.gz")
    ve.add_argument("--public-key", type=Path, metavar="PEM", help="require a valid Ed25519 signature by this key")
    ve.add_argument("--extract", type=Path, metavar="DIR", help="after verifying a bundle, unpack it into DIR")
    _output_options(ve)

    co = sub.add_parser("compare", help="regression gate: a new report against a baseline report", epilog=EPILOG)
    co.add_argument("new", type=Path, help="report.json (or the artifact folder holding it) of the new build")
    co.add_argument("--baseline", type=Path, required=True, help="report.json (or folder) to compare against")
    co.add_argument("--max-slowdown", type=_number(float, 0.0), default=0.10, metavar="FRACTION",
                    help="allowed p50 slowdown beyond the measurement noise (default 0.10)")
    co.add_argument("--max-cosine-drop", type=_number(float, 0.0), default=0.002, help="allowed drop of the worst cosine")
    co.add_argument("--max-top1-drop", type=_number(float, 0.0), default=0.01, help="allowed drop of top-1 agreement")
    co.add_argument("--max-size-growth", type=_number(float, 0.0), default=0.05, metavar="FRACTION",
                    help="allowed growth of the model files")
    co.add_argument("--remeasure", action="store_true",
                    help="re-measure both artifact folders here, interleaved, instead of trusting recorded latency "
                         "(use when the baseline was measured on another machine)")
    co.add_argument("--markdown", type=Path, metavar="FILE", help="also write the Markdown summary here")
    _output_options(co)

    ca = sub.add_parser("cache", help="list or prune the stage cache", epilog=EPILOG)
    ca_sub = ca.add_subparsers(dest="cache_command", required=True, parser_class=_Parser)
    cl = ca_sub.add_parser("list", help="entries, newest use last")
    cl.add_argument("--json", action="store_true")
    cp = ca_sub.add_parser("prune", help="remove entries (those in use by a running export are kept)")
    cp.add_argument("--older-than", type=_number(float, 0.0), metavar="DAYS", help="entries not used for this many days")
    cp.add_argument("--max-size", type=_number(float, 0.0), metavar="GIB", help="then least recently used until this size")
    cp.add_argument("--all", action="store_true", help="every entry")
    cp.add_argument("--json", action="store_true")

    kg = sub.add_parser("keygen", help="create an Ed25519 key pair for --sign-key / --public-key", epilog=EPILOG)
    kg.add_argument("path", type=Path, help="private key file to create (PATH.pub gets the public key)")

    ta = sub.add_parser("targets", help="list targets and what this host can run", epilog=EPILOG)
    ta.add_argument("--json", action="store_true")

    bu = sub.add_parser("build", help="every model of a build plan (.yaml/.json) as a comparison matrix, and an "
                                      "index", epilog=EPILOG)
    bu.add_argument("plan", type=Path, help="models: [{name, source, targets, precisions, eval, calibration, "
                                            "min_cosine, ...}]")
    bu.add_argument("--out", "-o", required=True, type=Path, help="folder: OUT/<name>/ per model, OUT/index.json")
    bu.add_argument("--cluster", metavar="ray|ADDRESS", help="run the cells on a Ray cluster, as for export")
    _node_grace_option(bu)
    bu.add_argument("--no-bench", action="store_true", help="skip latency measurement")
    bu.add_argument("--no-analysis", action="store_true", help="no profile, roofline or batch sweep")
    bu.add_argument("--no-cache", action="store_true", help="neither read nor fill the stage cache")
    _bench_options(bu)
    _output_options(bu)

    sub.add_parser("node-labels", help="this machine's kiln.dev/* labels, for `ray start --labels \"$(kiln node-labels)\"`",
                   epilog=EPILOG)
    return parser


def _bench_options(parser) -> None:
    group = parser.add_argument_group("measurement")
    group.add_argument("--threads", type=_number(int, 1), help="intra-op threads (default: physical cores)")
    group.add_argument("--warmup", type=_number(int, 0), default=10)
    group.add_argument("--runs", type=_number(int, 1), default=50, help="at least this many timed runs")
    group.add_argument("--min-seconds", type=_number(float, 0.0), default=2.0, help="and at least this long")
    group.add_argument("--throughput-seconds", type=_number(float, 0.0), default=2.0,
                       help="OpenVINO: also run this long with the THROUGHPUT hint and async requests (0: skip)")


def _output_options(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")


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


def _cmd_export(args) -> int:
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


def _node_grace_option(parser) -> None:
    parser.add_argument("--node-grace", type=_number(float, 0.0), metavar="SECONDS",
                        help="--cluster: how long a cell whose fitting nodes all left waits for one to join before it "
                             "is recorded no-hardware (default 60; an autoscaler may need minutes)")


def _executor(args):
    if not args.cluster:
        if args.node_grace is not None:
            raise UsageError("--node-grace applies to --cluster runs", hint="drop it, or add --cluster ray|ADDRESS")
        return None
    from kiln.farm.ray_executor import LOST_GRACE, RayExecutor

    return RayExecutor(None if args.cluster == "ray" else args.cluster,
                       LOST_GRACE if args.node_grace is None else args.node_grace)


def _cmd_build(args) -> int:
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


def _cmd_bench(args) -> int:
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


def _cmd_build_engine(args) -> int:
    from kiln.artifact import load_manifest, verify_files
    from kiln.backends.tensorrt.build_engine import BuildError, KitError, build
    from kiln.errors import ExportError

    manifest = load_manifest(args.artifact)
    if manifest["target"]["backend"] != "tensorrt":
        raise UsageError(f"{args.artifact} is a {manifest['target']['backend']} artifact, not a TensorRT one",
                         hint="export with --target tensorrt (or tensorrt-sm89, tensorrt-rtx, ...)")
    verify_files(args.artifact, manifest)
    kit = args.artifact / "tensorrt"
    try:
        result = build(kit, args.out or kit / "engines", args.builder, args.compute_capability)
    except KitError as exc:
        raise UsageError(str(exc), hint="the build kit was damaged or edited; export the artifact again") from None
    except BuildError as exc:
        raise ExportError(str(exc), hint="install TensorRT on the device (pip install tensorrt) or pass "
                                         "--builder tensorrt_rtx for RTX GPUs") from None
    if args.json:
        print(dumps(result))
    elif not args.quiet:
        for engine in result["engines"]:
            print(f"{engine['file']}: {engine['bytes'] / 2**20:.1f} MiB in {engine['build_seconds']:.1f} s "
                  f"({result['builder']} {result['tensorrt_version']})")
    return 0


def _cmd_build_llama_cpp(args) -> int:
    """llama.cpp from the pinned llama-cpp-python sdist: downloaded (hash checked), built, cached per CPU."""
    from kiln.llamacpp.toolchain import build

    result = build(force=args.force, quiet=args.quiet or args.json)
    record = {"schema_version": "kiln.llama-cpp-build/1", "root": str(result.root),
              **json.loads((result.root / "build.json").read_text())}
    if args.json:
        print(dumps(record))
    elif not args.quiet:
        v = record["versions"]
        print(f"llama.cpp {v['llama_cpp_commit']} (llama-cpp-python {v['llama_cpp_python']}, ggml {v['ggml']}) "
              f"for this CPU: {result.root}")
    return 0


def _cmd_verify(args) -> int:
    from kiln.artifact.bundle import extract_bundle
    from kiln.artifact.verify import verify

    result = verify(args.artifact, args.public_key)
    if args.extract is not None:
        if result["kind"] != "bundle":
            raise UsageError("--extract unpacks a bundle, and this is a folder", hint="give the .tar.gz")
        extract_bundle(args.artifact, args.extract)
        result["extracted_to"] = str(args.extract)
    if args.json:
        print(dumps(result))
    elif not args.quiet:
        print(f"{args.artifact}: ok, {result['files']} files ({result['bytes'] / 2**20:.1f} MiB) match the manifest; "
              f"signature {result['signature']}" + (f"; unpacked into {args.extract}" if args.extract else ""))
    return 0


def _cmd_compare(args) -> int:
    from kiln.compare import Thresholds, compare_reports, load_report_file, remeasure, render_markdown
    from kiln.errors import RegressionError

    thresholds = Thresholds(max_slowdown=args.max_slowdown, max_cosine_drop=args.max_cosine_drop,
                            max_top1_drop=args.max_top1_drop, max_size_growth=args.max_size_growth)
    new, old = load_report_file(args.new), load_report_file(args.baseline)
    measured = remeasure(args.new, args.baseline) if args.remeasure else None
    result = compare_reports(new, old, thresholds, measured)
    text = render_markdown(result)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if not args.json and not args.quiet:
        print(text)
    if result["regressions"]:
        error = RegressionError(f"{len(result['regressions'])} regression(s): " + "; ".join(result["regressions"]),
                                hint="fix them, or loosen the thresholds (--max-slowdown, --max-cosine-drop, ...) "
                                     "if the change is intended")
        error.report = result  # --json prints the comparison itself: CI wants the numbers
        raise error
    if args.json:
        print(dumps(result))
    return 0


def _cmd_cache(args) -> int:
    import time

    from kiln.artifact.cache import Cache

    cache = Cache()
    if args.cache_command == "prune":
        if args.older_than is None and args.max_size is None and not args.all:
            raise UsageError("kiln cache prune needs --older-than DAYS, --max-size GIB or --all",
                             hint="e.g. kiln cache prune --older-than 30")
        rows = cache.prune(args.older_than, None if args.max_size is None else int(args.max_size * 2**30), args.all)
        verb = "removed"
    else:
        rows, verb = cache.entries(), "holds"
    if args.json:
        print(json.dumps({"schema_version": "kiln.cache/1", "root": str(cache.root), "action": args.cache_command,
                          "entries": rows, "bytes": sum(r["bytes"] for r in rows)}, indent=2))
        return 0
    now = time.time()
    for r in sorted(rows, key=lambda r: r["last_used"]):
        print(f"{r['stage']:<9} {r['key'][:12]}  {r['bytes'] / 2**20:9.1f} MiB  used {_age(now - r['last_used']):>6} ago"
              f"  {r['describe']}")
    print(f"{cache.root} {verb} {len(rows)} entries, {sum(r['bytes'] for r in rows) / 2**20:.1f} MiB")
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _cmd_keygen(args) -> int:
    from kiln.artifact.signing import keygen

    private, public = keygen(args.path)
    print(f"private key {private} (keep it secret; --sign-key), public key {public} (--public-key)")
    return 0


def _threads(settings: dict):
    return settings.get("intra_op_num_threads") or settings.get("config", {}).get("INFERENCE_NUM_THREADS")


def _cmd_targets(args) -> int:
    from kiln.backends import BACKENDS
    from kiln.targets import CATALOGUE, detect_host, host_can_run

    host = detect_host()
    rows = []
    for spec in CATALOGUE:
        ok, why = host_can_run(spec, host)
        rows.append({"name": spec.name, "aliases": list(spec.aliases), "backend": spec.backend, "device": spec.device,
                     "precisions": list(spec.precisions),
                     "available": spec.backend in BACKENDS or spec.backend == "llamacpp",  # language models only
                     "runs_here": ok, "why_not": None if ok else why, "description": spec.description})
    if args.json:
        print(json.dumps({"schema_version": "kiln.targets/1", "host": host.fingerprint(), "targets": rows}, indent=2))
        return 0
    fp = host.fingerprint()
    print(f"host: {fp['cpu_model']} ({fp['arch']}, {fp['physical_cores']} cores), ISA: {' '.join(fp['isa_flags'])}")
    print(f"{'target':<18} {'backend':<12} {'precisions':<26} {'here':<5} aliases / notes")
    for r in rows:
        mark = "yes" if r["runs_here"] else "no"
        note = ", ".join(r["aliases"]) + ("" if r["runs_here"] else f"  [{r['why_not']}]")
        print(f"{r['name']:<18} {r['backend']:<12} {','.join(r['precisions']):<26} {mark:<5} {note}")
    return 0


def _cmd_node_labels(args) -> int:
    from kiln.targets.labels import this_node_labels

    print(",".join(f"{k}={v}" for k, v in this_node_labels().items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"export": _cmd_export, "bench": _cmd_bench, "targets": _cmd_targets,
               "build-engine": _cmd_build_engine, "build-llama-cpp": _cmd_build_llama_cpp, "verify": _cmd_verify,
               "compare": _cmd_compare, "cache": _cmd_cache, "keygen": _cmd_keygen,
               "node-labels": _cmd_node_labels, "build": _cmd_build}[args.command]
    try:
        return handler(args)
    except KilnError as error:
        if getattr(args, "debug", False):
            raise
        if getattr(args, "json", False):
            from kiln.pipeline import failure_report

            print(dumps(getattr(error, "report", None) or failure_report(error)))
        print(f"kiln: error: {error.one_line()}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        if exc.errno not in _DISK_FULL or getattr(args, "debug", False):
            raise
        from kiln.errors import ExportError

        error = ExportError(f"{os.strerror(exc.errno).lower()} writing {exc.filename or 'a file'}",
                            hint="free some space (or raise the file-size limit) and run again; nothing half-written "
                                 "was left at the output path")
        if getattr(args, "json", False):
            from kiln.pipeline import failure_report

            print(dumps(failure_report(error)))
        print(f"kiln: error: {error.one_line()}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
