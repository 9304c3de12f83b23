"""Atomic publication of an artifact folder: staged in a hidden sibling, renamed into place, leftovers cleaned."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kiln.artifact.publish import check_output_path, clean_leftovers, publish, staging_dir
from kiln.errors import UsageError

DEAD_PID = 999999


def siblings(out: Path) -> list[str]:
    """Everything next to `out` whose name starts with `.NAME` (staging, swap, leftovers)."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}"))


def write_artifact(folder: Path, **files: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")


@pytest.fixture(scope="module", autouse=True)
def dead_pid_is_dead():
    with pytest.raises(ProcessLookupError):
        os.kill(DEAD_PID, 0)


def test_staging_dir_is_a_hidden_sibling_tagged_with_this_pid(tmp_path):
    out = tmp_path / "out"
    staged = staging_dir(out)
    assert staged.parent == tmp_path
    assert staged.is_dir()
    assert staged.name.startswith(f".out.kiln-tmp-{os.getpid()}-")
    assert len(staged.name.rsplit("-", 1)[1]) == 8
    assert not out.exists()


def test_publish_into_a_new_path_renames_the_staged_folder(tmp_path):
    out = tmp_path / "out"
    staged = staging_dir(out)
    write_artifact(staged, **{"manifest.json": "{}", "model.onnx": "new"})
    publish(staged, out)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.onnx"]
    assert not staged.exists()
    assert siblings(out) == []


def test_publish_over_an_existing_artifact_replaces_it_whole_and_leaves_no_hidden_siblings(tmp_path):
    out = tmp_path / "out"
    write_artifact(out, **{"manifest.json": '{"v": 1}', "model.onnx": "old", "stale_only_in_old.bin": "x"})
    (out / "openvino").mkdir()
    (out / "openvino" / "model.xml").write_text("old", encoding="utf-8")
    staged = staging_dir(out)
    write_artifact(staged, **{"manifest.json": '{"v": 2}', "model.onnx": "new"})
    publish(staged, out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["manifest.json", "model.onnx"]
    assert (out / "manifest.json").read_text(encoding="utf-8") == '{"v": 2}'
    assert (out / "model.onnx").read_text(encoding="utf-8") == "new"
    assert siblings(out) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_clean_leftovers_removes_dead_runs_and_keeps_live_ones(tmp_path):
    out = tmp_path / "out"
    dead_tmp = tmp_path / f".out.kiln-tmp-{DEAD_PID}-deadbeef"
    dead_old = tmp_path / f".out.kiln-old-{DEAD_PID}-0badf00d"
    live = tmp_path / f".out.kiln-tmp-{os.getpid()}-12345678"
    for folder in (dead_tmp, dead_old, live):
        write_artifact(folder, **{"model.onnx": "partial"})
    removed = clean_leftovers(out)
    assert sorted(p.name for p in removed) == sorted([dead_tmp.name, dead_old.name])
    assert not dead_tmp.exists() and not dead_old.exists()
    assert (live / "model.onnx").read_text(encoding="utf-8") == "partial"


def test_clean_leftovers_leaves_unrelated_hidden_folders_alone(tmp_path):
    out = tmp_path / "out"
    write_artifact(out, **{"manifest.json": "{}"})
    keep = [tmp_path / ".out-notes", tmp_path / ".out.kiln-tmp-notapid-x", tmp_path / ".other.kiln-tmp-999999-x"]
    for folder in keep:
        folder.mkdir()
    assert clean_leftovers(out) == []
    assert all(folder.is_dir() for folder in keep)
    assert (out / "manifest.json").is_file()


def test_clean_leftovers_with_no_parent_folder_does_nothing(tmp_path):
    assert clean_leftovers(tmp_path / "missing" / "out") == []
    assert not (tmp_path / "missing").exists()


def test_clean_leftovers_handles_output_names_with_glob_characters(tmp_path):
    out = tmp_path / "run[1]"
    dead = tmp_path / f".run[1].kiln-tmp-{DEAD_PID}-deadbeef"
    dead.mkdir()
    assert clean_leftovers(out) == [dead]
    assert not dead.exists()


def test_check_output_path_refuses_a_regular_file(tmp_path):
    out = tmp_path / "out"
    out.write_text("a file", encoding="utf-8")
    with pytest.raises(UsageError) as info:
        check_output_path(out)
    assert info.value.message == f"output path {out} is a file"
    assert info.value.exit_code == 2


def test_check_output_path_refuses_a_foreign_non_empty_folder(tmp_path):
    out = tmp_path / "out"
    write_artifact(out, **{"thesis.tex": "years of work"})
    with pytest.raises(UsageError) as info:
        check_output_path(out)
    assert info.value.message == f"output folder {out} is not empty and holds no kiln artifact"
    assert (out / "thesis.tex").read_text(encoding="utf-8") == "years of work"


@pytest.mark.parametrize("state", ["missing", "empty", "artifact"])
def test_check_output_path_accepts_new_empty_and_previous_artifact_folders(tmp_path, state):
    out = tmp_path / "out"
    if state == "empty":
        out.mkdir()
    elif state == "artifact":
        write_artifact(out, **{"manifest.json": "{}", "model.onnx": "old"})
    assert check_output_path(out) is None
