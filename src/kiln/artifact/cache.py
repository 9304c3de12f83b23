"""The stage cache: results stored under a key derived from everything that determines them.

    <root>/entries/<stage>/<key>/   entry.json (what, when, sha256 of every file) + the stage's files
    <root>/locks/<stage>-<key>.lock an flock per key: one process computes, the others wait and reuse
    <root>/tmp/                     entries being written; renamed into entries/ only when complete
    <root>/hashes/                  sha256 of source files, keyed by path, size, mtime and inode

The root is $KILN_CACHE_DIR/stages or ~/.cache/kiln/stages. Entries are immutable once renamed into
place; a file whose sha256 no longer matches entry.json makes the entry a miss (and it is replaced).
A stage's key is the sha256 of canonical JSON of its inputs: source bytes, resolved settings,
toolchain versions, and for measurements the host fingerprint.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from kiln import faults
from kiln.artifact.publish import pid_alive
from kiln.exporters.base import sha256_file

ENTRY_NAME = "entry.json"
ENTRY_SCHEMA = "kiln.cache-entry/1"


def default_root() -> Path:
    base = os.environ.get("KILN_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "kiln") / "stages"


def make_key(parts: dict) -> str:
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Entry:
    path: Path
    meta: dict  # the stage's own JSON (entry.json "data")

    def file(self, name: str) -> Path:
        return self.path / "files" / name


class Cache:
    def __init__(self, root: Path | None = None):
        self.root = root or default_root()

    def _entry_dir(self, stage: str, key: str) -> Path:
        return self.root / "entries" / stage / key

    @contextlib.contextmanager
    def lock(self, stage: str, key: str):
        """Exclusive per key, across processes; released by the kernel if the process dies."""
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{stage}-{key}.lock", "a+") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def lookup(self, stage: str, key: str) -> Entry | None:
        """The complete, intact entry, or None. A damaged entry is removed (call under `lock`)."""
        path = self._entry_dir(stage, key)
        try:
            record = json.loads((path / ENTRY_NAME).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            if path.exists():
                shutil.rmtree(path, ignore_errors=True)
            return None
        for item in record.get("files", []):
            file = path / "files" / item["path"]
            try:
                intact = file.stat().st_size == item["bytes"] and sha256_file(file) == item["sha256"]
            except OSError:
                intact = False
            if not intact:
                shutil.rmtree(path, ignore_errors=True)
                return None
        os.utime(path / ENTRY_NAME)  # last used, for `kiln cache prune`
        return Entry(path, record.get("data", {}))

    def put(self, stage: str, key: str, describe: str, fill) -> Entry:
        """Write an entry: `fill(files_dir) -> data` writes the files and returns the JSON to keep.

        Written in tmp/ and renamed into place, so a reader sees nothing or the complete entry; an
        existing entry for the same key (a damaged one was already removed) is replaced."""
        tmp = self.root / "tmp" / f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        files = tmp / "files"
        files.mkdir(parents=True)
        try:
            data = fill(files)
            listed = []
            for file in sorted(p for p in files.rglob("*") if p.is_file()):
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
                listed.append({"path": file.relative_to(files).as_posix(), "sha256": sha256_file(file),
                               "bytes": file.stat().st_size})
            record = {"schema_version": ENTRY_SCHEMA, "stage": stage, "key": key, "describe": describe,
                      "created": time.time(), "files": listed, "data": data}
            from kiln.artifact.manifest import dumps

            (tmp / ENTRY_NAME).write_text(dumps(record), encoding="utf-8")
            faults.point("cache-store")
            final = self._entry_dir(stage, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():
                shutil.rmtree(final)
            os.rename(tmp, final)
            return Entry(final, json.loads(dumps(data)))
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def clean_tmp(self) -> None:
        """Remove entries being written by processes that died (kill -9, power loss)."""
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return
        for entry in tmp.iterdir():
            pid = entry.name.split("-", 1)[0]
            if pid.isdigit() and not pid_alive(int(pid)):
                shutil.rmtree(entry, ignore_errors=True)

    def entries(self) -> list[dict]:
        rows = []
        base = self.root / "entries"
        if not base.is_dir():
            return rows
        for stage_dir in sorted(base.iterdir()):
            for path in sorted(stage_dir.iterdir()):
                try:
                    record = json.loads((path / ENTRY_NAME).read_text(encoding="utf-8"))
                    used = (path / ENTRY_NAME).stat().st_mtime
                except (OSError, ValueError):
                    record, used = {}, path.stat().st_mtime
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                rows.append({"stage": stage_dir.name, "key": path.name, "bytes": size,
                             "created": record.get("created"), "last_used": used,
                             "describe": record.get("describe", "(damaged entry)")})
        return rows

    def prune(self, older_than_days: float | None = None, max_bytes: int | None = None,
              everything: bool = False) -> list[dict]:
        """Remove entries not used for `older_than_days`, then least recently used ones until the cache
        fits in `max_bytes` (or all of them). Entries locked by a running export are skipped."""
        self.clean_tmp()
        rows = sorted(self.entries(), key=lambda r: r["last_used"])
        now, removed = time.time(), []
        total = sum(r["bytes"] for r in rows)
        for row in rows:
            old = older_than_days is not None and now - row["last_used"] > older_than_days * 86400
            over = max_bytes is not None and total > max_bytes
            if not (everything or old or over):
                continue
            if self._remove_unlocked(row["stage"], row["key"]):
                removed.append(row)
                total -= row["bytes"]
        self._prune_ranges(older_than_days, everything)
        return removed

    def _prune_ranges(self, older_than_days: float | None, everything: bool) -> None:
        """Kept calibration ranges (tens of KB per model, passes/calibration_ranges.py): by age of last use, or all."""
        if not everything and older_than_days is None:
            return
        for kept in (self.root / "calibration").glob("*.json"):
            with contextlib.suppress(OSError):
                if everything or time.time() - kept.stat().st_mtime > older_than_days * 86400:
                    kept.unlink()

    def _remove_unlocked(self, stage: str, key: str) -> bool:
        locks = self.root / "locks"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{stage}-{key}.lock", "a+") as handle:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            try:
                shutil.rmtree(self._entry_dir(stage, key), ignore_errors=True)
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return True


def file_digest(path: Path, memo_root: Path | None) -> str:
    """sha256 of a file, remembered by (path, size, mtime_ns, inode) so unchanged sources are not re-read."""
    stat = path.stat()
    if memo_root is None:
        return sha256_file(path)
    ident = f"{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{stat.st_ino}\0{stat.st_ctime_ns}"
    memo = memo_root / hashlib.sha256(ident.encode()).hexdigest()
    try:
        value = memo.read_text().strip()
        if len(value) == 64:
            return value
    except OSError:
        pass
    value = sha256_file(path)
    memo_root.mkdir(parents=True, exist_ok=True)
    partial = memo.with_name(f"{memo.name}.{os.getpid()}-{uuid.uuid4().hex[:6]}")
    partial.write_text(value)
    os.replace(partial, memo)
    return value


def tree_digest(path: Path, memo_root: Path | None) -> str:
    """One digest over a file, or over every file under a folder keyed by relative path."""
    if path.is_file():
        return file_digest(path, memo_root)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(file.relative_to(path).as_posix().encode() + b"\0" + file_digest(file, memo_root).encode() + b"\n")
    return digest.hexdigest()
