"""Shared checks for the hostile-input suite: every refusal is one line, the documented exit code, no traceback,
and nothing half-written at the output path or beside it."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from tests.conftest import run_cli

OK, USAGE, UNSUPPORTED, GATE, EXPORT_FAILED, VERIFY_FAILED = 0, 2, 3, 4, 5, 6
STAGING_TAGS = (".kiln-tmp-", ".kiln-old-")


def kiln(*args, timeout: float = 120) -> subprocess.CompletedProcess:
    return run_cli(*map(str, args), timeout=timeout)


def export(source, out: Path, *extra, timeout: float = 120) -> subprocess.CompletedProcess:
    """`kiln export` as a build script runs it, quiet and without the latency measurement."""
    return kiln("export", source, "--out", out, "--no-bench", "--quiet", *extra, timeout=timeout)


def snapshot(path: Path):
    """What sits at `path`: None, a file's bytes, or a folder's {relative path: bytes} (to prove it was left alone)."""
    if path.is_symlink() or path.is_file():
        return path.read_bytes()
    if path.is_dir():
        return {p.relative_to(path).as_posix(): p.read_bytes() if p.is_file() else None for p in path.rglob("*")}
    return None


def staging_leftovers(folder: Path) -> list[str]:
    """Hidden staging or swap entries (`.NAME.kiln-tmp-*`, `.NAME.kiln-old-*`) in `folder`."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if any(tag in p.name for tag in STAGING_TAGS))


def error_line(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """The CLI contract: no traceback, exactly one stderr line `kiln: error: ...` naming the problem, exit `code`."""
    both = result.stderr + result.stdout
    assert "Traceback" not in both, f"traceback (exit {result.returncode}):\n{both[-3000:]}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"expected one stderr line, got {len(lines)} (exit {result.returncode}):\n{result.stderr}"
    line = lines[0]
    assert line.startswith("kiln: error: "), line
    for needle in needles:
        assert needle in line, f"{needle!r} not in: {line}"
    assert result.returncode == code, f"exit {result.returncode}, expected {code}: {line}"
    return line


def assert_refused(result: subprocess.CompletedProcess, code: int, *needles: str, out: Path | None = None,
                   before=None) -> str:
    """`error_line`, then: `out` holds what it held before the run (`before`, None: nothing) and no staging leftovers."""
    line = error_line(result, code, *needles)
    if out is not None:
        assert snapshot(out) == before, f"{out} changed after a refused run"
        assert staging_leftovers(out.parent) == [], staging_leftovers(out.parent)
    return line


# -- tar files, written by hand ------------------------------------------------------------------------------

def read_bundle(path: Path) -> dict[str, bytes]:
    """The regular files of a bundle, in order: {name: bytes}."""
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def file_entry(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def special_entry(name: str, kind: bytes, **fields) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info, None


def write_tar_gz(path: Path, entries: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def rebundle(path: Path, members: dict[str, bytes], extra: list | None = None) -> Path:
    """A bundle with these files (in this order), then the `extra` (TarInfo, data) entries."""
    return write_tar_gz(path, [file_entry(n, d) for n, d in members.items()] + list(extra or []))
