"""Shared checks for the source-coverage integration tests (what every successful export must show)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx

from kiln.schemas import validate_document
from tests.conftest import run_cli, tiny_mlp_onnx

OK, USAGE, EXPORT_FAILED = 0, 2, 5
NEAR_EXACT_COSINE = 0.99999
NEAR_EXACT_REL = 1e-5  # fp32 max abs error, relative to the output's scale


# --- helpers -------------------------------------------------------------------------------------------------


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_artifact(out: Path) -> tuple[dict, dict]:
    """manifest.json and report.json of an artifact, both valid against kiln's published schemas."""
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert validate_document(manifest, "manifest") == []
    assert validate_document(report, "report") == []
    return manifest, report


def export(source, out: Path, *extra: str, cwd: Path | None = None) -> tuple[dict, dict]:
    """`kiln export SOURCE --out OUT --no-bench EXTRA...`, which must succeed; returns (manifest, report)."""
    result = run_cli("export", source, "--out", out, "--no-bench", "--quiet", *extra, cwd=cwd, timeout=300)
    assert result.returncode == OK, result.stderr[-3000:]
    return read_artifact(out)


def signature(manifest: dict) -> dict[str, tuple[str, list]]:
    """{name: (dtype, shape)} over the artifact's inputs and outputs."""
    io = manifest["io"]
    return {t["name"]: (t["dtype"], t["shape"]) for t in io["inputs"] + io["outputs"]}


def files(manifest: dict) -> dict[str, str]:
    return {f["path"]: f["sha256"] for f in manifest["files"]}


def assert_files_hashed(manifest: dict, out: Path) -> None:
    """Every file of the artifact is listed with its real sha256 and size, and nothing listed is missing (the
    measurement files and the signature are not listed: they are not part of what the artifact is)."""
    from kiln.artifact.manifest import UNLISTED

    listed = {f["path"]: f for f in manifest["files"]}
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} - set(UNLISTED)
    assert set(listed) == on_disk
    for rel, entry in listed.items():
        assert entry["sha256"] == sha256(out / rel), rel
        assert entry["bytes"] == (out / rel).stat().st_size, rel


def assert_near_exact(report: dict, out: Path, outputs: tuple[str, ...]) -> None:
    """fp32 against the source model: cosine ~1 and max abs error tiny next to the output's magnitude."""
    metrics = report["accuracy"]["outputs"]
    assert set(metrics) == set(outputs)
    with np.load(out / "sample_output.npz") as sample:
        scales = {name: float(np.max(np.abs(sample[name]))) for name in outputs}
    for name in outputs:
        m = metrics[name]
        assert m["samples"] >= 1
        assert m["cosine_min"] > NEAR_EXACT_COSINE, (name, m)
        assert m["max_rel_error"] < NEAR_EXACT_REL, (name, m)
        assert scales[name] > 0, name
        assert m["max_abs_error"] <= NEAR_EXACT_REL * scales[name], (name, m["max_abs_error"], scales[name])
    assert report["accuracy"]["gate"]["passed"] is True


def assert_checked_at_other_shape(report: dict, dynamic: dict[str, tuple[int, ...]]) -> None:
    """The export check ran at a second shape that differs from the export shape on each dynamic axis,
    and matched the source there. `dynamic`: input name -> its dynamic axes."""
    check = report["export"]["check"]
    assert check["passed"] is True
    by_label = {c["inputs"]: c for c in check["checks"]}
    probe = check["probe"]
    assert probe["status"] == "checked", probe
    assert "export shape" in by_label and probe["inputs"] in by_label, list(by_label)
    first, other = by_label["export shape"]["shapes"], by_label[probe["inputs"]]["shapes"]
    assert set(first) == set(other)
    for name, axes in dynamic.items():
        assert len(first[name]) == len(other[name])
        for axis, (a, b) in enumerate(zip(first[name], other[name])):
            if axis in axes:
                assert a != b, (name, axis, first[name], other[name])
            else:
                assert a == b, (name, axis, first[name], other[name])
    for row in by_label[probe["inputs"]]["outputs"].values():
        assert row["ok"] is True and row["max_abs_error"] <= row["tolerance"], row


def ort_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ort_run(path: Path, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort_session(path)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def torch_run(module, *arrays: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return module(*(torch.from_numpy(a) for a in arrays)).numpy()


def ext_data_onnx(folder: Path) -> Path:
    """The tiny MLP with every initializer moved into weights.bin next to model.onnx."""
    folder.mkdir(parents=True)
    model = onnx.load(str(tiny_mlp_onnx(folder / "plain.onnx")))
    (folder / "plain.onnx").unlink()
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    return path


# --- 1. ONNX with external data ---------------------------------------------------------------------------
