"""The stage cache store on its own: keys, atomic entries, damage detection, locks across processes, pruning."""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import pytest

from kiln.artifact.cache import Cache, file_digest, make_key, tree_digest


def _fill(text: str, data: dict | None = None):
    def fill(files: Path) -> dict:
        (files / "payload.txt").write_text(text)
        (files / "sub").mkdir()
        (files / "sub" / "more.bin").write_bytes(text.encode() * 100)
        return data or {"text": text}
    return fill


def test_key_is_canonical_json_of_the_inputs():
    assert make_key({"a": 1, "b": [1, 2]}) == make_key({"b": [1, 2], "a": 1})
    assert make_key({"a": 1}) != make_key({"a": 2})
    assert len(make_key({})) == 64


def test_put_then_lookup_returns_the_files_and_data(tmp_path):
    cache = Cache(tmp_path)
    key = make_key({"x": 1})
    assert cache.lookup("export", key) is None
    cache.put("export", key, "test entry", _fill("hello", {"n": 3}))
    entry = cache.lookup("export", key)
    assert entry.meta == {"n": 3}
    assert entry.file("payload.txt").read_text() == "hello"
    assert entry.file("sub/more.bin").stat().st_size == 500
    assert not any((tmp_path / "tmp").iterdir())  # nothing left being written


@pytest.mark.parametrize("damage", ["flip a byte", "truncate", "delete a file", "garbage entry.json"])
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path, damage):
    cache = Cache(tmp_path)
    key = make_key({"damage": damage})
    entry = cache.put("compile", key, "test", _fill("payload"))
    target = entry.file("sub/more.bin")
    if damage == "flip a byte":
        data = bytearray(target.read_bytes())
        data[10] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:-1])
    elif damage == "delete a file":
        target.unlink()
    else:
        (entry.path / "entry.json").write_text("{not json")
    assert cache.lookup("compile", key) is None
    assert not entry.path.exists()


def test_a_failed_fill_leaves_no_entry_and_no_temporary_files(tmp_path):
    cache = Cache(tmp_path)

    def broken(files: Path) -> dict:
        (files / "half.bin").write_bytes(b"x" * 1000)
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        cache.put("bench", make_key({"k": 1}), "test", broken)
    assert cache.lookup("bench", make_key({"k": 1})) is None
    assert list((tmp_path / "tmp").iterdir()) == []


def test_temporary_entries_of_dead_processes_are_cleaned(tmp_path):
    cache = Cache(tmp_path)
    dead = tmp_path / "tmp" / "999999999-abc"  # no such pid
    alive = tmp_path / "tmp" / f"{os.getpid()}-abc"
    for path in (dead, alive):
        (path / "files").mkdir(parents=True)
    cache.clean_tmp()
    assert not dead.exists() and alive.exists()


def _compute_under_lock(root: str, key: str, log: str) -> None:
    """One of several processes racing for the same key: only the first computes, the rest reuse."""
    cache = Cache(Path(root))
    with cache.lock("export", key):
        if cache.lookup("export", key) is None:
            with open(log, "a") as handle:
                handle.write(f"{os.getpid()}\n")
            time.sleep(0.3)
            cache.put("export", key, "race", _fill("computed once"))
    assert cache.lookup("export", key).file("payload.txt").read_text() == "computed once"


def test_processes_racing_for_one_key_compute_it_once(tmp_path):
    key, log = make_key({"race": 1}), tmp_path / "computed.log"
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_compute_under_lock, args=(str(tmp_path / "cache"), key, str(log)))
               for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert [w.exitcode for w in workers] == [0] * 6
    assert len(log.read_text().split()) == 1


def test_prune_by_age_and_size_keeps_recent_and_locked_entries(tmp_path):
    cache = Cache(tmp_path)
    keys = [make_key({"i": i}) for i in range(4)]
    for i, key in enumerate(keys):
        entry = cache.put("bench", key, f"entry {i}", _fill("x" * (i + 1)))
        old = time.time() - (10 - i) * 86400  # entry 0 last used 10 days ago, entry 3 seven days ago
        os.utime(entry.path / "entry.json", (old, old))
    with cache.lock("bench", keys[0]):  # a running export holds entry 0
        removed = cache.prune(older_than_days=8.5)
    assert [r["key"] for r in removed] == [keys[1]]
    sizes = {r["key"]: r["bytes"] for r in cache.entries()}
    assert set(sizes) == {keys[0], keys[2], keys[3]}
    removed = cache.prune(max_bytes=sizes[keys[3]])  # least recently used go first until it fits
    assert [r["key"] for r in removed] == [keys[0], keys[2]]
    assert cache.prune(everything=True)[0]["key"] == keys[3] and cache.entries() == []


def test_file_digests_are_remembered_by_stat_and_notice_changes(tmp_path):
    memo = tmp_path / "memo"
    model = tmp_path / "model.bin"
    model.write_bytes(b"a" * 4096)
    first = file_digest(model, memo)
    assert len(list(memo.iterdir())) == 1
    assert file_digest(model, memo) == first
    time.sleep(0.01)
    model.write_bytes(b"b" * 4096)  # same size, new mtime
    assert file_digest(model, memo) != first


def test_tree_digest_covers_names_and_contents(tmp_path):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"a": 1}))
    (folder / "weights.bin").write_bytes(b"w" * 100)
    before = tree_digest(folder, None)
    (folder / "weights.bin").rename(folder / "weights2.bin")
    assert tree_digest(folder, None) != before
