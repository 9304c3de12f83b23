"""The `kiln` command line: every command's options, checked as they are parsed (a bad value is one line and
exit 2)."""

from __future__ import annotations

import argparse
from pathlib import Path

from kiln import __version__
from kiln.config import PRECISIONS


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
                      help="keep the node named NODE (else every node whose name contains NODE) out of "
                           "quantization, or out of fp16 on TensorRT with the moves after it (repeat)")
    gate.add_argument("--fallback", action="store_true",
                      help="int8/fp8: keep the units that break the budget in float, found by search on a tuning "
                           "split of the calibration data (--precision auto does this at the target's int8); "
                           "TensorRT fp16: keep the nodes fp16 breaks in fp32 (fp32 islands)")
    gate.add_argument("--search-seconds", type=float, default=150.0,
                      help="wall-clock limit of the fallback search; on timeout the best point within budget is used")
    gate.add_argument("--tuning-margin", type=float, default=None,
                      help="share of the budget's slack the search leaves unused on its tuning split, against the "
                           "noise of a small split (default 0.5: cosine 0.99 is searched at 0.995; 0.25 for a top-1 "
                           "budget, searched on the expected disagreement; 0: at the budget, as NNCF's accuracy "
                           "control does)"),
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


def _node_grace_option(parser) -> None:
    parser.add_argument("--node-grace", type=_number(float, 0.0), metavar="SECONDS",
                        help="--cluster: how long a cell whose fitting nodes all left waits for one to join before it "
                             "is recorded no-hardware (default 60; an autoscaler may need minutes)")
