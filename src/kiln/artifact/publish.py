"""Atomic publication: an artifact is built in a hidden sibling and renamed into place when complete.

The output path therefore holds nothing, the previous complete artifact, or the new complete one;
leftovers of interrupted runs (whose process is gone) are removed by the next run.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from kiln import faults
from kiln.errors import UsageError

_TMP_TAG = ".kiln-tmp-"
_OLD_TAG = ".kiln-old-"


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_leftovers(out: Path) -> list[Path]:
    """Remove staging folders of earlier runs into `out` whose process has died.

    A run killed between moving the previous artifact aside and renaming the new one into place left
    `out` empty: the previous artifact is put back rather than removed."""
    removed = []
    if not out.parent.exists():
        return removed
    for entry in sorted(out.parent.iterdir()):
        for tag in (_TMP_TAG, _OLD_TAG):
            prefix = f".{out.name}{tag}"
            if entry.name.startswith(prefix):
                pid = entry.name[len(prefix):].split("-", 1)[0]
                if pid.isdigit() and not pid_alive(int(pid)):
                    if tag == _OLD_TAG and not out.exists() and (entry / "manifest.json").is_file():
                        os.rename(entry, out)
                    elif entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink(missing_ok=True)  # a bundle being written
                    removed.append(entry)
    return removed


def check_parents(path: Path, what: str) -> None:
    """No parent of `path` may be an existing file (mkdir would fail half-way through the work)."""
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(f"{what} {path} is under {parent}, which is a file",
                                 hint="choose a path whose parent folders are folders")
            return


def check_output_path(out: Path) -> None:
    check_parents(out, "output path")
    if out.exists() and not out.is_dir():
        raise UsageError(f"output path {out} is a file", hint="give a folder path for --out")
    if out.is_dir() and any(out.iterdir()) and not (out / "manifest.json").exists():
        raise UsageError(f"output folder {out} is not empty and holds no kiln artifact",
                         hint="choose a new --out folder; kiln only replaces its own artifacts")
    parent = out.parent if out.parent != Path("") else Path(".")
    if parent.exists() and not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write into {parent}", hint="choose an --out folder you can write to")


def missing_parents(out: Path) -> list[Path]:
    """Parent folders of `out` that do not exist yet, outermost first (to remove them if the run fails)."""
    missing = []
    parent = out.absolute().parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    return missing[::-1]


def staging_dir(out: Path) -> Path:
    path = out.parent / f".{out.name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir()
    except OSError as exc:  # os.access says yes to root, and /proc or a read-only mount still refuse
        raise UsageError(f"cannot write into {out.parent} ({exc.strerror})",
                         hint="choose an --out folder you can write to") from None
    return path


def discard(staged: Path, created_parents: list[Path]) -> None:
    """Remove a failed run's staging folder and the parent folders it created, if they are empty."""
    shutil.rmtree(staged, ignore_errors=True)
    for parent in reversed(created_parents):
        try:
            parent.rmdir()
        except OSError:
            break


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def publish(staged: Path, out: Path) -> None:
    """Swap `staged` into `out`, keeping the previous artifact until the new one is in place."""
    _fsync_tree(staged)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}{_OLD_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.rename(out, old)
        faults.point("publish-swap")
    os.rename(staged, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
