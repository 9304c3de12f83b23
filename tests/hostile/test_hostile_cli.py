"""Hostile command lines: unknown commands and options, bad option values, malformed input specs, broken report
files for `kiln compare`, and cache/keygen misuse. Each is one `kiln: error:` line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest

from tests.hostile.helpers import OK, USAGE, assert_refused, error_line, export, kiln, snapshot


# -- commands and options -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (("verify", "x.tar.gz", "--frobnicate"), "unrecognized arguments: --frobnicate"),
    (("cache", "list", "--everything"), "unrecognized arguments: --everything"),
    (("targets", "--gpu"), "unrecognized arguments: --gpu"),
], ids=["verify", "cache_list", "targets"])
def test_unknown_option_of_a_subcommand(argv, needle):
    """An option the subcommand does not have: exit 2, argparse's one line naming it."""
    error_line(kiln(*argv), USAGE, needle)


def test_misspelled_export_option(tiny, out):
    """`--precison int8` (a typo) on export: exit 2 naming the unknown option, nothing exported with defaults."""
    assert_refused(export(tiny, out, "--synthetic-data", "--precison", "int8"), USAGE,
                   "unrecognized arguments: --precison int8", out=out)


@pytest.mark.parametrize("command", ["frobnicate", "exprot"])
def test_unknown_subcommand(command):
    """`kiln frobnicate` / `kiln exprot`: exit 2, invalid choice naming it."""
    error_line(kiln(command, "model.onnx"), USAGE, f"invalid choice: '{command}'")


@pytest.mark.parametrize("target", ["gpu-from-mars", "tpu:0"])
def test_unknown_target(tiny, out, target):
    """--target that no catalogue entry or alias matches: exit 2 naming it and listing real targets."""
    assert_refused(export(tiny, out, "--synthetic-data", "--target", target), USAGE, f"unknown target '{target}'",
                   "onnxruntime", out=out)


@pytest.mark.parametrize("precision", ["INT8", "fp3", "int8;rm -rf /"])
def test_unknown_precision(tiny, out, precision):
    """--precision that is not a precision (wrong case, invented, shell junk): exit 2 listing the real ones."""
    assert_refused(export(tiny, out, "--synthetic-data", "--precision", precision), USAGE,
                   f"unknown precision '{precision}'", "fp32", out=out)


@pytest.mark.parametrize("option", ["--target", "--precision"])
def test_empty_target_or_precision_list(tiny, out, option):
    """`--target ,` or `--precision ,`: exit 2, at least one value needed."""
    assert_refused(export(tiny, out, "--synthetic-data", option, ","), USAGE,
                   "--target and --precision need at least one value", out=out)


@pytest.mark.parametrize("spec,needle", [
    ("x", "input spec 'x' is malformed"),
    ("=1,8", "input spec '=1,8' is malformed"),
    ("1x=1,8", "input spec '1x=1,8' is malformed"),
    ("x=1,8:float99", "has unknown dtype 'float99'"),
    ("x=1,8:", "has unknown dtype ''"),
    ("x=1,-8", "dimension '-8' is not valid"),
    ("x=1,,8", "dimension '' is not valid"),
    ("x=batch=,8", "dimension 'batch=' is not valid"),
    ("x=0,8", "dimension '0' is not valid"),
    ("x=1;8", "dimension '1;8' is not valid"),
])
def test_malformed_input_spec(tiny, out, spec, needle):
    """--input specs that do not parse (no name, bad dtype, negative/empty/zero/garbled dims): exit 2."""
    assert_refused(export(tiny, out, "--synthetic-data", "--input", spec), USAGE, needle, out=out)


def test_input_spec_with_the_wrong_rank(tiny, out):
    """--input x=1,8,3 for the rank-2 input x: exit 2 naming both ranks."""
    assert_refused(export(tiny, out, "--synthetic-data", "--input", "x=1,8,3"), USAGE,
                   "--input x has 3 dims, the model's input has 2", out=out)


def test_input_spec_with_an_absurd_dim(tiny, out):
    """--input x=batch=99999999999999999999,8: exit 2 naming the dimension, not a numpy crash."""
    assert_refused(export(tiny, out, "--synthetic-data", "--input", "x=batch=99999999999999999999,8"), USAGE,
                   "99999999999999999999", out=out)


@pytest.mark.parametrize("option,value,needle", [
    ("--runs", "-5", "argument --runs: '-5' must be at least 1"),
    ("--threads", "0", "argument --threads: '0' must be at least 1"),
    ("--threads", "-1", "argument --threads"),
    ("--threads", "many", "argument --threads: 'many' is not an integer"),
    ("--warmup", "-1", "argument --warmup"),
    ("--sequence-length", "0", "sequence_length"),
    ("--opset", "99", "opset"),
    ("--image-size", "axb", "argument --image-size: 'axb' is not a size"),
    ("--mean", "0.5,0.5", "argument --mean: '0.5,0.5' is not three numbers"),
    ("--min-seconds", "-1", "argument --min-seconds"),
])
def test_bad_export_option_value(tiny, out, option, value, needle):
    """Export options with out-of-range or unparsable values: exit 2 naming the option."""
    assert_refused(export(tiny, out, "--synthetic-data", option, value), USAGE, needle, out=out)


def test_negative_export_rtol_is_a_bad_option(tiny, out):
    """--export-rtol -1 (a tolerance below zero no export can meet): exit 2 naming the option, not exit 5."""
    assert_refused(export(tiny, out, "--synthetic-data", "--export-rtol", "-1"), USAGE, "argument --export-rtol", out=out)


@pytest.mark.parametrize("option,value,needle", [("--runs", "-5", "argument --runs"), ("--warmup", "-1", "argument --warmup")])
def test_bad_bench_option_value(built, option, value, needle):
    """`kiln bench ARTIFACT --runs -5` / `--warmup -1`: exit 2 naming the option, as export does."""
    error_line(kiln("bench", built.artifact, "--quiet", option, value), USAGE, needle)


# -- kiln compare -------------------------------------------------------------------------------------------------

@pytest.fixture
def good_report(built, tmp_path):
    path = tmp_path / "baseline.json"
    path.write_bytes((built.artifact / "report.json").read_bytes())
    return path


@pytest.mark.parametrize("content,needle", [
    (b"{\"schema_version\": \"kiln.report/1\", ", "is not valid JSON"),
    (b"\xff\xfe{}", "is not valid JSON"),
    (b"[1, 2, 3]", "has schema 'list'"),
], ids=["cut_json", "utf16_bom_bytes", "json_array"])
def test_compare_with_a_report_that_is_not_a_report(good_report, tmp_path, content, needle):
    """`kiln compare` of a file that is cut JSON, non-UTF-8 bytes, or a JSON array: exit 2 naming the file."""
    new = tmp_path / "new.json"
    new.write_bytes(content)
    error_line(kiln("compare", new, "--baseline", good_report, "--quiet"), USAGE, f"{new} {needle}")


def test_compare_with_a_report_of_the_wrong_schema_version(good_report, tmp_path):
    """A real report.json relabelled kiln.report/99 as the baseline: exit 2 naming both versions."""
    report = json.loads(good_report.read_text(encoding="utf-8"))
    report["schema_version"] = "kiln.report/99"
    baseline = tmp_path / "future.json"
    baseline.write_text(json.dumps(report), encoding="utf-8")
    error_line(kiln("compare", good_report, "--baseline", baseline, "--quiet"), USAGE,
               f"{baseline} has schema 'kiln.report/99'", "kiln.report/1")


def test_compare_with_a_missing_baseline(good_report, tmp_path):
    """`kiln compare` whose --baseline does not exist: exit 2 naming it."""
    missing = tmp_path / "gone" / "report.json"
    error_line(kiln("compare", good_report, "--baseline", missing, "--quiet"), USAGE,
               f"{missing} is not a report.json")


def test_compare_with_a_failed_export_report(good_report, tmp_path):
    """A report whose status is 'failed' (what --json prints for a refused export): exit 2, nothing to compare."""
    failed = tmp_path / "failed.json"
    failed.write_text(json.dumps({"schema_version": "kiln.report/1", "status": "failed"}), encoding="utf-8")
    error_line(kiln("compare", failed, "--baseline", good_report, "--quiet"), USAGE,
               f"{failed} is a report of a failed export")


# -- kiln cache and kiln keygen -----------------------------------------------------------------------------------

def test_cache_prune_without_a_criterion(monkeypatch, tmp_path):
    """`kiln cache prune` with none of --older-than/--max-size/--all: exit 2, removes nothing."""
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path / "cache"))
    error_line(kiln("cache", "prune"), USAGE, "kiln cache prune needs --older-than DAYS, --max-size GIB or --all")


@pytest.mark.parametrize("criterion", [("--older-than", "-1"), ("--max-size", "-1")])
def test_cache_prune_with_a_negative_criterion(monkeypatch, tmp_path, tiny, criterion):
    """`kiln cache prune --older-than -1` / `--max-size -1`: exit 2, the cache is left as it was."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("KILN_CACHE_DIR", str(cache))
    assert export(tiny, tmp_path / "warm", "--synthetic-data").returncode == OK
    before = snapshot(cache)
    assert before, "the export stored nothing in the cache"
    error_line(kiln("cache", "prune", *criterion), USAGE, criterion[0])
    assert snapshot(cache) == before


def test_keygen_refuses_to_overwrite_an_existing_file(tmp_path):
    """`kiln keygen PATH` where PATH is an existing file: exit 2, the file is not overwritten."""
    path = tmp_path / "precious.key"
    path.write_text("do not overwrite\n", encoding="utf-8")
    error_line(kiln("keygen", path), USAGE, f"{path} already exists")
    assert path.read_text(encoding="utf-8") == "do not overwrite\n"
    assert not path.with_name("precious.key.pub").exists()


def test_keygen_into_a_missing_folder(tmp_path):
    """`kiln keygen nowhere/key` where nowhere/ does not exist: exit 2 in one line naming the path."""
    error_line(kiln("keygen", tmp_path / "nowhere" / "key"), USAGE, "nowhere")
