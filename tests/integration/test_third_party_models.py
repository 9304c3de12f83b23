"""Third-party models from the conformance corpus (benchmarks/corpus.py) through the real `kiln export` CLI.

Nobody here wrote these models: PaddleOCR graphs from paddle2onnx (dims declared -1 and '?', H and W that must be
multiples of 32, opset 11), Silero VAD (unset dims, an If graph with an LSTM inside, a scalar int64 `sr`, a
`state` batched on axis 1), tf2onnx, skl2onnx and a torch module. Each export runs with the model's own data
(written once per module into a work folder) and is judged on numbers: the named dynamic dims in the manifest,
where each size came from, which shapes the export check ran, what it says about a second shape the source model
cannot run, and the cosine similarity to the source model's outputs. Refusals are one `kiln: error:` line with
the documented exit code. Exports that several tests read are made once (module-scoped fixtures).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest

from tests.conftest import run_cli
from tests.hostile.helpers import error_line
from tests.integration.source_checks import read_artifact

from benchmarks.corpus import basic_pitch_clips, by_name, installed  # importable: tests.conftest put the repo on sys.path

OK, USAGE = 0, 2
FP32_COSINE = 0.9999
SUBSET = ("oww-embedding", "basic-pitch", "sklearn-mlp", "mtcnn-pnet", "doc-orientation")
MODELS = ("ppocr-cls", "ppocr-det", "silero-vad", "plcmos", "sklearn-logreg-zipmap", *SUBSET)

_missing = sorted({by_name(name).package for name in MODELS if not installed(by_name(name).package)})
if _missing:
    pytest.skip(f"corpus packages not installed: {', '.join(_missing)} (scripts/setup.sh installs them)",
                allow_module_level=True)


@dataclass(frozen=True)
class Run:
    result: subprocess.CompletedProcess
    out: Path


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The corpus work folder: each model's data (folders of .npz files) and generated sources (sklearn)."""
    return tmp_path_factory.mktemp("corpus")


def _source(work: Path, name: str) -> str:
    return by_name(name).source(work)


def _data(work: Path, name: str) -> str:
    return str(by_name(name).write_data(work))


def _export(work: Path, label: str, source: str, *extra: str) -> Run:
    """`kiln export SOURCE --out WORK/out/LABEL EXTRA... --no-bench --no-analysis --quiet --json`."""
    out = work / "out" / label
    out.parent.mkdir(parents=True, exist_ok=True)
    result = run_cli("export", source, "--out", out, *extra, "--no-bench", "--no-analysis", "--quiet", "--json")
    return Run(result, out)


def _ok(run: Run) -> tuple[dict, dict]:
    """The export succeeded (exit 0, no traceback): (manifest, report), the report being what --json printed."""
    both = run.result.stderr + run.result.stdout
    assert "Traceback" not in both, f"traceback (exit {run.result.returncode}):\n{both[-3000:]}"
    assert run.result.returncode == OK, f"exit {run.result.returncode}:\n{run.result.stderr[-3000:]}"
    manifest, report = read_artifact(run.out)
    assert json.loads(run.result.stdout) == report
    return manifest, report


def _io(manifest: dict) -> dict[str, list]:
    return {t["name"]: t["shape"] for t in manifest["io"]["inputs"]}


def _cosines(report: dict) -> dict[str, float]:
    return {name: m["cosine_min"] for name, m in report["accuracy"]["outputs"].items() if "cosine_min" in m}


def _checked_shapes(report: dict) -> list[dict]:
    return [c["shapes"] for c in report["export"]["check"]["checks"]]


# -- exports shared between tests ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cls_synthetic(work) -> Run:
    return _export(work, "cls-synthetic", _source(work, "ppocr-cls"), "--synthetic-data")


@pytest.fixture(scope="module")
def cls_input(work) -> Run:
    return _export(work, "cls-input", _source(work, "ppocr-cls"), "--input", "x=1,3,48,192",
                   "--eval", _data(work, "ppocr-cls"))


@pytest.fixture(scope="module")
def det_eval(work) -> Run:
    return _export(work, "det-eval", _source(work, "ppocr-det"), "--eval", _data(work, "ppocr-det"))


@pytest.fixture(scope="module")
def vad(work) -> Run:
    return _export(work, "vad", _source(work, "silero-vad"), "--eval", _data(work, "silero-vad"))


# -- ppocr-cls: x declared [-1, 3, '?', '?'] ----------------------------------------------------------------------

def test_ppocr_cls_minus_one_and_question_mark_dims_are_named_dynamic_dims(cls_synthetic):
    """Without --input, the three dims paddle2onnx declares as -1 and '?' stay dynamic in the artifact, named
    <input>_batch / <input>_dim<axis>, and their sizes come from kiln's defaults."""
    manifest, report = _ok(cls_synthetic)
    assert _io(manifest) == {"x": ["x_batch", 3, "x_dim2", "x_dim3"]}
    check = report["export"]["check"]
    assert check["dims_from"] == {"x_batch": "default", "x_dim2": "default", "x_dim3": "default"}
    assert check["passed"] is True


def test_ppocr_cls_input_spec_sizes_the_anonymous_dims_and_matches_the_source(cls_input):
    """`--input x=1,3,48,192` gives every anonymous dim its size (dims_from says --input for each), the dims stay
    dynamic in the manifest, and on real text-line crops the export matches the source (cosine >= 0.9999)."""
    manifest, report = _ok(cls_input)
    check = report["export"]["check"]
    assert check["dims"] == {"x_batch": 1, "x_dim2": 48, "x_dim3": 192}
    assert check["dims_from"] == {"x_batch": "--input", "x_dim2": "--input", "x_dim3": "--input"}
    assert _io(manifest) == {"x": ["x_batch", 3, "x_dim2", "x_dim3"]}
    assert report["accuracy"]["data"]["synthetic"] is False
    cosines = _cosines(report)
    assert len(cosines) == 1 and min(cosines.values()) >= FP32_COSINE, cosines


# -- ppocr-det: H and W must be multiples of 32 -------------------------------------------------------------------

def test_ppocr_det_input_shape_the_model_cannot_run_is_one_line_naming_the_node(work):
    """`--input x=1,3,100,100` (not multiples of 32): the source model itself fails at that shape, so kiln refuses
    with exit 2 and one line naming the failing node and op and pointing at --input; nothing is written."""
    run = _export(work, "det-100", _source(work, "ppocr-det"), "--input", "x=1,3,100,100", "--synthetic-data")
    error_line(run.result, USAGE, "the source model cannot run the export shape", "p2o.Add", "(Add)", "--input")
    assert not run.out.exists()


def test_ppocr_det_eval_data_of_two_shapes_is_checked_at_both_and_matches_the_source(det_eval):
    """With its eval data (two files, 320x480 and 416x320), the export shape comes from the data, the second
    shape the export check runs is the other-shaped data (probe status checked), and fp32 matches the source."""
    manifest, report = _ok(det_eval)
    check = report["export"]["check"]
    assert set(check["dims_from"].values()) == {"data"}
    assert sorted(check["dims"].values()) == [1, 320, 480]
    probe = check["probe"]
    assert probe["status"] == "checked", probe
    assert probe["reason"] is None
    assert "another shape" in probe["inputs"], probe
    probe_checks = [c for c in check["checks"] if c["inputs"] == probe["inputs"]]
    assert [c["shapes"] for c in probe_checks] == [{"x": [1, 3, 416, 320]}]
    assert {"x": [1, 3, 320, 480]} in _checked_shapes(report)
    assert check["passed"] is True
    assert all(isinstance(d, str) for d in _io(manifest)["x"][2:]), _io(manifest)
    cosines = _cosines(report)
    assert len(cosines) == 1 and min(cosines.values()) >= FP32_COSINE, cosines


def test_ppocr_det_check_shape_the_model_cannot_run_is_one_line_naming_check_shape(work, det_eval):
    """`--check-shape x=1,3,100,100` with the (valid) eval data: the source model cannot run that second shape, so
    kiln refuses with exit 2 naming --check-shape, also right after the same export was made without it (the
    stage cache must not answer for a run that asks for another check shape)."""
    _ok(det_eval)  # the same source and data, exported (and cached) without --check-shape
    run = _export(work, "det-check-100", _source(work, "ppocr-det"), "--eval", _data(work, "ppocr-det"),
                  "--check-shape", "x=1,3,100,100")
    if run.result.returncode == OK:  # say what happened instead of "no stderr line"
        report = json.loads(run.result.stdout)
        pytest.fail(f"exit 0: --check-shape x=1,3,100,100 was not run; checked {_checked_shapes(report)}, "
                    f"stage cache {report['cache']['stages']}")
    error_line(run.result, USAGE, "the source model cannot run --check-shape", "p2o.Add", "(Add)", "--check-shape")
    assert not run.out.exists()


def test_ppocr_det_eval_data_with_other_shapes_than_input_is_checked_at_both(work):
    """`--input x=1,3,320,480` with eval data that also holds 416x320 samples: the export succeeds, the sizes come
    from --input, and the export check ran both shapes."""
    run = _export(work, "det-input", _source(work, "ppocr-det"), "--input", "x=1,3,320,480",
                  "--eval", _data(work, "ppocr-det"))
    _, report = _ok(run)
    check = report["export"]["check"]
    assert set(check["dims_from"].values()) == {"--input"}
    shapes = _checked_shapes(report)
    assert {"x": [1, 3, 320, 480]} in shapes, shapes
    assert {"x": [1, 3, 416, 320]} in shapes, shapes
    assert check["passed"] is True
    assert min(_cosines(report).values()) >= FP32_COSINE


# -- silero-vad: unset dims, If graph with an LSTM, scalar sr, state batched on axis 1 ----------------------------

def test_silero_vad_matches_the_source_on_its_streaming_data(vad):
    """The streaming chunks with the state the model carried: both outputs (speech probability and the next
    state) match the source at cosine >= 0.9999 over all 24 samples."""
    _, report = _ok(vad)
    cosines = _cosines(report)
    assert set(cosines) == {"output", "stateN"}
    assert min(cosines.values()) >= FP32_COSINE, cosines
    assert {m["samples"] for m in report["accuracy"]["outputs"].values()} == {24}


def test_silero_vad_probe_the_source_cannot_run_is_skipped_and_says_why(vad):
    """The derived probe (a 1024-sample chunk) is a shape the source model cannot run (its LSTM fails): the export
    still succeeds, checked at the export shape and the data's shapes only, and the probe is reported skipped with
    the node and op that failed."""
    _, report = _ok(vad)
    check = report["export"]["check"]
    probe = check["probe"]
    assert probe["status"] == "skipped", probe
    assert "1024" in probe["reason"], probe
    assert "node '" in probe["reason"] and "(LSTM)" in probe["reason"], probe
    assert all(c["shapes"]["input"] == [1, 512] for c in check["checks"]), _checked_shapes(report)
    assert check["passed"] is True


def test_silero_vad_manifest_keeps_the_scalar_and_the_state_batch_axis(vad):
    """The artifact's inputs: `sr` a scalar (shape []), `state` [2, <named dim>, 128] (its batch is axis 1), and
    `input` with both unset dims named."""
    manifest, report = _ok(vad)
    io = _io(manifest)
    assert io["sr"] == []
    assert io["state"][0] == 2 and io["state"][2] == 128 and isinstance(io["state"][1], str), io
    assert io["input"] == ["input_batch", "input_dim1"], io
    assert report["export"]["check"]["dims"] == {"input_batch": 1, "input_dim1": 512, "state_dim1": 1}
    assert set(report["export"]["check"]["dims_from"].values()) == {"data"}


def test_silero_vad_tensorrt_fp16_keeps_the_if_graph_fp32_and_matches(work):
    """TensorRT fp16 on silero-vad (the graph verified on ONNX Runtime): the If node, whose bodies hold the LSTM,
    is kept fp32, and both outputs stay within cosine 0.999 of the source."""
    run = _export(work, "vad-trt-fp16", _source(work, "silero-vad"), "--target", "tensorrt", "--precision", "fp16",
                  "--eval", _data(work, "silero-vad"))
    _, report = _ok(run)
    assert "If" in report["compile"]["graph_precision"]["kept_fp32_ops"], report["compile"]["graph_precision"]
    cosines = _cosines(report)
    assert set(cosines) == {"output", "stateN"}
    assert min(cosines.values()) >= 0.999, cosines


# -- ONNX Runtime int8 on an opset 11 Paddle graph ----------------------------------------------------------------

def test_ppocr_cls_int8_converts_opset_11_up_and_records_it(work):
    """Static per-channel int8 on ppocr-cls (opset 11, calibrated on its eval data): the graph is converted to
    opset 13 for per-channel Q/DQ, the report records the conversion, and accuracy holds (cosine >= 0.9)."""
    data = _data(work, "ppocr-cls")
    run = _export(work, "cls-int8", _source(work, "ppocr-cls"), "--target", "onnxruntime", "--precision", "int8",
                  "--eval", data, "--calibration", data)
    _, report = _ok(run)
    conversion = report["compile"]["quantization"]["opset_conversion"]
    assert conversion is not None
    assert (conversion["from"], conversion["to"]) == (11, 13), conversion
    cosines = _cosines(report)
    assert len(cosines) == 1 and min(cosines.values()) >= 0.9, cosines


# -- a representative subset at ONNX Runtime fp32 -----------------------------------------------------------------

@pytest.mark.parametrize("name", SUBSET)
def test_corpus_subset_fp32_matches_the_source(work, name):
    """tf2onnx (an 'unk__' batch dim), skl2onnx, a torch module and a Paddle classifier at ONNX Runtime fp32, on
    their own data: every float output matches the source at cosine >= 0.9999, integer labels match exactly."""
    model = by_name(name)
    run = _export(work, f"subset-{name}", model.source(work), "--target", "onnxruntime", "--precision", "fp32",
                  "--eval", _data(work, name), *model.args)
    _, report = _ok(run)
    outputs = report["accuracy"]["outputs"]
    assert outputs
    cosines = _cosines(report)
    assert cosines, outputs
    assert min(cosines.values()) >= FP32_COSINE, cosines
    for output, m in outputs.items():
        if "cosine_min" not in m:  # a class label (int64): compared exactly
            assert m["exact_match"] == 1.0, (output, m)
    assert report["export"]["check"]["passed"] is True


# -- fp16 on a model whose activations leave fp16's range ---------------------------------------------------------

def test_mel_front_end_fp16_keeps_out_of_range_activations_fp32_and_matches(work):
    """openWakeWord's mel front end takes int16-scaled audio: its power spectrum reaches ~2e12, far past fp16's 65504.
    The TensorRT fp16 graph keeps the nodes whose measured activations exceed fp16's range in fp32 (with no fp16
    round trip between them) and matches the source; a naive cast gives Inf outputs (cosine NaN) on every sample."""
    run = _export(work, "mel-fp16", _source(work, "oww-melspectrogram"), "--target", "tensorrt", "--precision", "fp16",
                  "--eval", _data(work, "oww-melspectrogram"), "--min-cosine", "0.999")
    _, report = _ok(run)
    precision = report["compile"]["graph_precision"]
    assert any(op.startswith("Pow") for op in precision["kept_fp32_out_of_range"]), precision["kept_fp32_out_of_range"]
    assert max(precision["kept_fp32_out_of_range"].values()) > 1e9
    assert precision["fp16_round_trips_removed"] >= 1
    output = report["accuracy"]["outputs"]["output"]
    assert output["non_finite_samples"] == 0 and output["cosine_min"] >= FP32_COSINE, output


def test_non_finite_outputs_fail_the_accuracy_gate():
    """Metrics of a compiled model whose outputs overflowed (Inf in 2 of 3 samples, the source finite): the
    samples are counted and a --min-cosine gate fails on them (NaN compares false, which used to read as a pass)."""
    import numpy as np

    from kiln.config import AccuracyBudget
    from kiln.validate import gate, output_metrics

    refs = [np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4) * (i + 1) for i in range(3)]
    gots = [refs[0].copy(), np.full((3, 4), np.inf, np.float32), refs[2] * np.float32(np.inf)]
    metrics = output_metrics(refs, gots, classes=False)
    assert metrics["non_finite_samples"] == 2
    failures = gate({"output": metrics}, AccuracyBudget(min_cosine=0.99))
    assert failures == ["output: 2 of 3 samples have NaN/Inf outputs where the source model's are finite"]
    assert gate({"output": metrics}, AccuracyBudget()) == []


# -- inputs bound to constants, and OpenVINO at the shapes the model can compile at --------------------------------

def test_silero_vad_constant_sr_folds_the_if_and_openvino_runs_it(work):
    """`--constant sr=16000` binds the scalar input the If branches on: the If is folded away (the export says which),
    `sr` is no longer an input, and the data's own `sr` arrays (all 16000) are accepted. OpenVINO's CPU plugin cannot
    compile the Squeeze-on-a-dim If that torch.onnx left inside (dynamic rank): the inputs are fixed to the data's
    chunk and state shapes with the batch left dynamic, the report says so, and both outputs match the source."""
    run = _export(work, "vad-openvino-16k", _source(work, "silero-vad"), "--target", "openvino",
                  "--constant", "sr=16000", "--eval", _data(work, "silero-vad"))
    manifest, report = _ok(run)
    assert set(_io(manifest)) == {"input", "state"}
    assert any("bound sr=16000; folded away: If If_0" in note for note in report["export"]["notes"]), report["export"]
    static = report["compile"]["static_shapes"]
    assert static["shapes"] == {"input": [None, 512], "state": [2, 1, 128]} and static["batch_dynamic"] is True
    assert "dynamic rank" in static["reason"] and "If " in static["reason"], static
    assert any("takes these input shapes only" in note for note in report["notes"]), report["notes"]
    cosines = _cosines(report)
    assert set(cosines) == {"output", "stateN"} and min(cosines.values()) >= FP32_COSINE, cosines


def test_plcmos_openvino_fixes_every_dim_when_the_batch_alone_is_not_enough(work):
    """PLCMOS (torch.onnx, GRU): a Squeeze whose axes are computed has no rank until every input dim is known, so
    the OpenVINO artifact takes the data's shapes exactly (batch included), and matches the source."""
    run = _export(work, "plcmos-openvino", _source(work, "plcmos"), "--target", "openvino",
                  "--eval", _data(work, "plcmos"))
    _, report = _ok(run)
    static = report["compile"]["static_shapes"]
    assert static["batch_dynamic"] is False and "Squeeze" in static["reason"], static
    assert static["shapes"]["rater_embed"] == [1, 64], static
    assert min(_cosines(report).values()) >= FP32_COSINE


def test_an_output_with_one_value_per_sample_is_judged_by_its_error_not_by_cosine(work):
    """PLCMOS's quality score is one number per sample, where cosine is 1.0 whatever the error. A budget that only
    --min-cosine states is refused before compiling (exit 2, one line, no artifact); with --max-abs-error the int8
    artifact is judged on its error, and the report says cosine did not judge that output. A top-1 budget alone is
    refused alike: one number has no classes."""
    source, data = _source(work, "plcmos"), _data(work, "plcmos")
    common = ("--precision", "int8", "--calibration", data, "--eval", data, "--min-cosine", "0.99")
    refused = _export(work, "plcmos-int8-cosine", source, *common)
    error_line(refused.result, USAGE, "--min-cosine cannot judge", "one value per sample", "--max-abs-error")
    assert not refused.out.exists()
    top1 = _export(work, "plcmos-int8-top1", source, *common[:-2], "--max-top1-disagreement", "0.1")
    error_line(top1.result, USAGE, "--max-top1-disagreement cannot judge", "no classes to agree on")
    _, report = _ok(_export(work, "plcmos-int8-abs", source, *common, "--max-abs-error", "0.5"))
    (name, metrics), = [(n, m) for n, m in report["accuracy"]["outputs"].items() if "cosine_min" in m]
    assert metrics["one_value_per_sample"] and metrics["cosine_min"] == 1.0  # the figure cosine cannot move
    assert 1e-4 < metrics["max_abs_error"] <= 0.5, metrics  # int8 does move the score: the error says by how much
    gate = report["accuracy"]["gate"]
    assert gate["passed"] and gate["not_judged_by_cosine"] == [name], gate


@pytest.mark.parametrize("constant, needles", [
    ("sr=8000", ("stream.npz: array 'sr' holds [16000]", "--constant binds sr=8000")),
    ("rate=16000", ("--constant rate", "has no input 'rate'")),
    ("sr=16000.5", ("does not fit input 'sr' (int64)",)),
])
def test_constant_that_does_not_fit_the_model_or_the_data_is_one_line(work, constant, needles):
    """A bound value the data contradicts, an input the model lacks, a value its dtype cannot hold: exit 2, one line."""
    run = _export(work, f"vad-constant-{constant}", _source(work, "silero-vad"), "--constant", constant,
                  "--eval", _data(work, "silero-vad"))
    error_line(run.result, USAGE, *needles)
    assert not run.out.exists()


def test_constant_on_a_torch_source_is_one_line(work):
    run = _export(work, "pnet-constant", _source(work, "mtcnn-pnet"), "--constant", "sr=16000",
                  *by_name("mtcnn-pnet").args, "--synthetic-data")
    error_line(run.result, USAGE, "--constant applies to ONNX sources")


# -- scikit-learn: ZipMap on request, ai.onnx.ml written as standard ONNX where the runtime has none --------------

def test_sklearn_zipmap_refusal_names_the_option(work):
    run = _export(work, "zipmap-refused", _source(work, "sklearn-logreg-zipmap"),
                  "--eval", _data(work, "sklearn-logreg-zipmap"))
    error_line(run.result, USAGE, "sequence of maps (scikit-learn's ZipMap)", "--zipmap-as-tensor")


def test_sklearn_zipmap_as_tensor_on_openvino_lowers_the_linear_classifier(work):
    """`--zipmap-as-tensor` ships the [N, 3] probabilities ZipMap wrapped; OpenVINO has no ai.onnx.ml, so the
    LinearClassifier and Normalizer are written as MatMul/Add/Softmax/ArgMax/Gather and ReduceSum/Div: labels match
    exactly and probabilities at cosine >= 0.9999."""
    run = _export(work, "zipmap-openvino", _source(work, "sklearn-logreg-zipmap"), "--target", "openvino",
                  "--zipmap-as-tensor", "--eval", _data(work, "sklearn-logreg-zipmap"))
    manifest, report = _ok(run)
    outputs = {t["name"]: t for t in manifest["io"]["outputs"]}
    assert outputs["output_probability"]["dtype"] == "float32" and outputs["output_probability"]["shape"][1] == 3
    ml = report["compile"]["ml_ops"]
    assert ml == {"lowered": ["LinearClassifier LinearClassifier", "Normalizer Normalizer"], "left": []}, ml
    accuracy = report["accuracy"]["outputs"]
    assert accuracy["output_label"]["exact_match"] == 1.0
    assert accuracy["output_probability"]["cosine_min"] >= FP32_COSINE


def test_sklearn_mlp_tensorrt_graph_has_no_ml_domain_and_matches(work):
    """The PCA + MLP pipeline's Scaler and ArrayFeatureExtractor lowered for TensorRT's parser (which builds the
    default domain only); the fp16 graph matches the source and the labels agree on every sample."""
    run = _export(work, "mlp-trt", _source(work, "sklearn-mlp"), "--target", "tensorrt", "--precision", "fp16",
                  "--eval", _data(work, "sklearn-mlp"))
    _, report = _ok(run)
    assert report["compile"]["ml_ops"]["lowered"] == ["Scaler Scaler", "ArrayFeatureExtractor ArrayFeatureExtractor"]
    assert report["accuracy"]["outputs"]["label"]["exact_match"] == 1.0
    assert min(_cosines(report).values()) >= 0.999


def test_basic_pitch_int8_survives_the_quantizers_name_clash(work):
    """tf2onnx names a Conv's bias `a;b` and its output `a;b2`: ONNX Runtime's quantizer's suffixed names then clash
    and its graph does not load (a Transpose reads the [36] bias). kiln quantizes again with plain internal tensor
    names: the artifact loads and runs, and the renaming is reported."""
    data = _data(work, "basic-pitch")
    run = _export(work, "basic-pitch-int8", _source(work, "basic-pitch"), "--precision", "int8",
                  "--eval", data, "--calibration", data)
    _, report = _ok(run)
    assert report["compile"]["quantization"]["internal_tensors_renamed"] > 100
    cosines = _cosines(report)
    assert len(cosines) == 3 and min(cosines.values()) >= 0.8, cosines


@pytest.mark.parametrize("name, ops, floor", [("sklearn-mlp", {"MatMul": 1, "Gemm": 2}, 0.995),
                                              ("basic-pitch", {"Conv": 32}, 0.9)])
def test_tensorrt_int8_graph_of_models_the_quantizer_tripped_on(work, name, ops, floor):
    """The TensorRT int8 graph of two graphs ONNX Runtime's quantizer failed on. skl2onnx writes a Gemm's bias as
    [1, N], on which the quantizer's int32-bias scale adjustment raised "truth value of an array is ambiguous"; the
    TensorRT graph has no int32 bias, so the adjustment is off. tf2onnx's names clash with the quantizer's suffixes
    (see the int8 test above): the TensorRT graph is quantized again with plain tensor names. Both ship with every
    weight layer int8 and hold their measured accuracy (sklearn-mlp 0.9987, basic-pitch 0.927)."""
    data = _data(work, name)
    run = _export(work, f"{name}-trt-int8", _source(work, name), "--target", "tensorrt", "--precision", "int8",
                  "--eval", data, "--calibration", data)
    _, report = _ok(run)
    graph = report["compile"]["graph_precision"]
    assert graph["quantized_ops"] == ops
    assert (graph["internal_tensors_renamed"] > 100) == (name == "basic-pitch")
    assert min(_cosines(report).values()) >= floor, _cosines(report)


CQT_AND_LOG = "normalized_log_1/add"  # Basic Pitch's log(x + eps) of its constant-Q spectrogram


@pytest.fixture(scope="module")
def basic_pitch_calibration(work) -> str:
    """16 clips that share none of the evaluation clips' seeds: the fp32-island search tunes on every other one."""
    folder = work / "data" / "basic-pitch-calibration"
    folder.mkdir(parents=True, exist_ok=True)
    basic_pitch_clips(folder, range(4, 20))
    return str(folder)


def _trt_graph(run: Run) -> onnx.ModelProto:
    return onnx.load(str(run.out / "tensorrt" / "model.onnx"))


def _fp32_nodes(model: onnx.ModelProto, op_type: str | None = None) -> set[str]:
    """Nodes (of `op_type`) that write fp32 (their output's inferred type; the fp16 graph's other nodes write fp16)."""
    typed = onnx.shape_inference.infer_shapes(model)
    types = {v.name: v.type.tensor_type.elem_type for v in list(typed.graph.value_info) + list(typed.graph.output)}
    return {n.name for n in model.graph.node if op_type in (None, n.op_type)
            and types.get(n.output[0]) == onnx.TensorProto.FLOAT}


def test_tensorrt_fp16_keeps_what_the_user_and_the_island_search_keep_in_fp32(work, basic_pitch_calibration):
    """Basic Pitch's TensorRT fp16 graph reads cosine 0.987 against the fp32 model. `--keep-fp32` of the log's Add
    is honoured at fp16 (it was silently dropped: fp16 had no quantization plan to carry it) and lifts the worst
    cosine; `--fallback --min-cosine 0.995` finds that Add and the constant-Q convolutions, keeps them in fp32 and
    the rest of the network in fp16, and holds the budget on evaluation clips the search never saw."""
    data = _data(work, "basic-pitch")
    plain = _ok(_export(work, "bp-fp16", _source(work, "basic-pitch"), "--target", "tensorrt", "--precision", "fp16",
                        "--eval", data))[1]
    kept_run = _export(work, "bp-fp16-keep", _source(work, "basic-pitch"), "--target", "tensorrt", "--precision",
                       "fp16", "--keep-fp32", CQT_AND_LOG, "--eval", data)
    kept = _ok(kept_run)[1]
    assert any(CQT_AND_LOG in n for n in kept["compile"]["graph_precision"]["kept_fp32_nodes"])
    assert min(_cosines(plain).values()) < 0.99
    assert min(_cosines(kept).values()) > min(_cosines(plain).values()) + 0.005, (_cosines(plain), _cosines(kept))

    run = _export(work, "bp-fp16-islands", _source(work, "basic-pitch"), "--target", "tensorrt", "--precision",
                  "fp16", "--fallback", "--min-cosine", "0.995", "--calibration", basic_pitch_calibration,
                  "--eval", data)
    report = _ok(run)[1]
    islands = report["compile"]["graph_precision"]["fp32_islands"]
    assert islands["searched"] and not islands["all_fp16"]["passed"] and islands["budget_met_on_tuning"]
    assert any(CQT_AND_LOG in n for n in islands["kept_units"]), islands["kept_units"]
    assert 0 < len(islands["kept_units"]) < islands["units"]  # islands, not the whole graph in fp32
    kept_convs = {n for n in islands["kept_units"] if "conv1d" in n}
    model = _trt_graph(run)
    assert _fp32_nodes(model, "Conv") == kept_convs and sum(n.op_type == "Conv" for n in model.graph.node) > len(kept_convs)
    assert report["accuracy"]["gate"]["passed"] and min(_cosines(report).values()) >= 0.995, _cosines(report)
    assert "## fp32 islands in the fp16 graph" in (run.out / "report.md").read_text()
    # the kept units passed back by name give the graph the search shipped, the moves after each unit's first node
    # included (before, only first nodes were kept: their Relus and Transposes rounded to fp16 again)
    back_run = _export(work, "bp-fp16-back", _source(work, "basic-pitch"), "--target", "tensorrt", "--precision",
                       "fp16", *(arg for name in islands["kept_units"] for arg in ("--keep-fp32", name)), "--eval", data)
    back = _ok(back_run)[1]
    assert _fp32_nodes(_trt_graph(back_run)) == _fp32_nodes(model)
    assert _cosines(back) == pytest.approx(_cosines(report), abs=1e-6)
    html = (run.out / "report.html").read_text()
    assert "fp32 islands in the fp16 graph" in html and f"of {islands['units']} units" in html


def test_tensorrt_auto_meets_a_budget_its_fp16_rest_alone_misses(work, basic_pitch_calibration):
    """The ladder's bottom rung inside a quantized graph: Basic Pitch at `--precision auto --min-cosine 0.99` on
    TensorRT. Its fp16 rest alone reads 0.987, so before fp32 islands even every unit restored missed the budget
    (exit 4). Now the islands come first, the unit search then finds units behind the islands' Casts and restores
    them in fp32, part of the int8 convolutions stay int8, and the gate passes on the evaluation clips."""
    run = _export(work, "bp-trt-auto", _source(work, "basic-pitch"), "--target", "tensorrt", "--precision", "auto",
                  "--min-cosine", "0.99", "--calibration", basic_pitch_calibration, "--eval", _data(work, "basic-pitch"))
    report = _ok(run)[1]
    graph = report["compile"]["graph_precision"]
    islands, mixed = graph["fp32_islands"], graph["mixed_precision"]
    assert islands["searched"] and islands["budget_met_on_tuning"] and islands["tuning_share"] == 0.25
    # every island unit found on the float graph is in the int8 graph (a move may be gone: the quantizer folded
    # Transpose__553, a Transpose of a constant slice, into a weight)
    assert not set(islands["kept_units"]) & set(islands["not_in_quantized_graph"])
    assert mixed["search_seconds_limit"] < 150 - islands["search"]["seconds"] + 1  # one --search-seconds for both
    assert mixed["budget_met_on_tuning"] and 0 < len(mixed["kept_fp32"]) < mixed["units"]
    island_convs = {n for n in islands["kept_units"] if "conv1d" in n}
    assert island_convs and island_convs <= {u for u in mixed["search"]["order"]}  # found behind the islands' Casts
    model = _trt_graph(run)
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0  # still an int8 graph
    assert report["accuracy"]["gate"]["passed"] and min(_cosines(report).values()) >= 0.99, _cosines(report)
    # the second fp16 reading beside the check: every fp16 tensor rounded reads lower here (0.988 against 0.991),
    # never gated, and report.md says so
    rounded = {n: m["cosine_min"] for n, m in report["accuracy"]["fp16_rounded"]["outputs"].items()}
    assert rounded.keys() == _cosines(report).keys()
    assert 0.95 < min(rounded.values()) < min(_cosines(report).values()), (rounded, _cosines(report))
    assert "With every fp16 tensor rounded where it is written" in (run.out / "report.md").read_text()


QUICK_BENCH = ("--warmup", "1", "--runs", "5", "--min-seconds", "0.1", "--profile-runs", "2", "--batch-sizes", "1",
               "--throughput-seconds", "0.3")


@pytest.mark.parametrize("label, name, extra", [
    ("vad-timed", "silero-vad", ("--constant", "sr=16000")),  # the source baseline feeds the bound sr
    ("zipmap-openvino-timed", "sklearn-logreg-zipmap", ("--target", "openvino", "--zipmap-as-tensor")),  # ports
])
def test_timed_exports_of_rewritten_graphs_measure_both_sides(work, label, name, extra):
    """With measurement on: the source model is timed with the bound constant fed to it, and OpenVINO's throughput
    and per-layer profile find inputs whose port picked up a folded Cast's name. Both latencies are real numbers."""
    out = work / "out" / label
    result = run_cli("export", _source(work, name), "--out", out, "--eval", _data(work, name), *extra, *QUICK_BENCH,
                     "--quiet", "--json")
    _, report = _ok(Run(result, out))
    assert report["source_bench"]["latency_ms"]["p50"] > 0 and report["latency_ms"]["p50"] > 0
    assert report["speedup_vs_source"] > 0
