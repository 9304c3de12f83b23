"""Fixtures of the hostile-input suite: a tiny ONNX model and one real signed artifact (the session's stage cache
is tests/conftest.py's: never the user's ~/.cache/kiln)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import tiny_mlp_onnx
from tests.hostile.helpers import kiln, read_bundle


@pytest.fixture
def out(tmp_path) -> Path:
    return tmp_path / "out"


@pytest.fixture
def tiny(tmp_path) -> Path:
    return tiny_mlp_onnx(tmp_path / "tiny.onnx")


@dataclass(frozen=True)
class Built:
    """One real export of the tiny model, signed, with its bundle; and an unsigned twin."""

    artifact: Path          # signed artifact folder
    bundle: Path            # its signed bundle
    members: dict           # {name: bytes} of the signed bundle
    unsigned_bundle: Path
    unsigned_members: dict
    key: Path               # private key that signed it
    public_key: Path
    other_public_key: Path  # a valid key pair that did not sign it


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Built:
    root = tmp_path_factory.mktemp("built")
    model = tiny_mlp_onnx(root / "tiny.onnx")
    for name in ("signer", "stranger"):
        result = kiln("keygen", root / name)
        assert result.returncode == 0, result.stderr
    signed = kiln("export", model, "--out", root / "A", "--bundle", "--no-bench", "--synthetic-data", "--quiet",
                  "--sign-key", root / "signer")
    assert signed.returncode == 0, signed.stderr
    unsigned = kiln("export", model, "--out", root / "U", "--bundle", "--no-bench", "--synthetic-data", "--quiet")
    assert unsigned.returncode == 0, unsigned.stderr
    built = Built(artifact=root / "A", bundle=root / "A.tar.gz", members=read_bundle(root / "A.tar.gz"),
                  unsigned_bundle=root / "U.tar.gz", unsigned_members=read_bundle(root / "U.tar.gz"),
                  key=root / "signer", public_key=root / "signer.pub", other_public_key=root / "stranger.pub")
    assert "manifest.json.sig" in built.members and "model.onnx" in built.members
    assert "manifest.json.sig" not in built.unsigned_members
    return built
