#!/usr/bin/env python
"""Build the deterministic English sentence set used to evaluate and calibrate text-embedding exports.

Why: comparing an exported text model against its fp32 reference (and calibrating
int8 activation ranges) needs a few hundred varied, licence-clean English
sentences that are available offline. Python's standard library ships plenty in
its docstrings. The sentences are drawn from a fixed list of stdlib modules,
filtered to drop code-like fragments, de-duplicated, and sampled with a fixed
seed from a sorted pool into three length bands (short 25-60, medium 61-149,
long 150-300 characters; roughly a third each). Stdlib docstrings hold only
about 50 clean sentences of 200-300 characters, so the long band starts at 150.

Docstrings change between Python versions, so the output
(``data/eval_sentences.txt``) is committed rather than regenerated on use.
Re-run this script only when the set is meant to change.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import random
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

MODULES = (
    "argparse", "asyncio", "bisect", "calendar", "collections", "contextlib",
    "csv", "dataclasses", "datetime", "decimal", "email", "email.message",
    "email.utils", "enum", "fractions", "functools", "hashlib", "heapq", "html",
    "http", "http.client", "http.cookies", "inspect", "itertools", "json",
    "logging", "os", "pathlib", "queue", "random", "re", "shutil", "socket",
    "sqlite3", "ssl", "statistics", "string", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "typing", "unittest", "urllib.parse",
    "xml.etree.ElementTree", "zipfile",
)
SEED = 20261126
COUNT = 400
MIN_LEN, MAX_LEN = 25, 300
# (name, lowest length, highest length), inclusive.
BANDS = (("short", 25, 60), ("medium", 61, 149), ("long", 150, 300))
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "data" / "eval_sentences.txt"

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z\"'(])")
_BANNED = (">>>", "::", "{", "}", "=", "\\", "`", "...", "http://", "https://", "|")


def _docstrings(module_name: str) -> list[str]:
    """Docstrings of a module and of the classes, functions and methods it defines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # e.g. typing.io / typing.re
        return _collect(importlib.import_module(module_name), module_name)


def _collect(module: object, module_name: str) -> list[str]:
    docs = [module.__doc__]
    prefix = module_name.split(".")[0]

    def own(obj: object) -> bool:
        mod = getattr(obj, "__module__", None) or ""
        return mod == prefix or mod.startswith(prefix + ".")

    for _, obj in sorted(vars(module).items()):
        if (inspect.isclass(obj) or inspect.isroutine(obj)) and own(obj):
            docs.append(obj.__doc__)
            if inspect.isclass(obj):
                for _, member in sorted(vars(obj).items()):
                    func = getattr(member, "__func__", member)
                    if inspect.isroutine(func) or isinstance(member, property):
                        docs.append(getattr(func, "__doc__", None))
    return [d for d in docs if isinstance(d, str) and d.strip()]


def _sentences(doc: str) -> list[str]:
    out = []
    for paragraph in re.split(r"\n\s*\n", inspect.cleandoc(doc)):
        lines = paragraph.splitlines()
        # Skip indented blocks (code examples, argument tables) and bullet lists.
        if any(line.startswith((" ", "\t", "-", "*", "+")) for line in lines):
            continue
        text = " ".join(" ".join(lines).split())
        out.extend(s.strip() for s in _SENTENCE_END.split(text))
    return out


def _keep(s: str) -> bool:
    if not MIN_LEN <= len(s) <= MAX_LEN or any(b in s for b in _BANNED):
        return False
    if not (s[0].isupper() and s[-1] in ".!?") or not s.isprintable():
        return False
    if sum(c.isalpha() for c in s) < 0.6 * len(s) or len(s.split()) < 5:
        return False
    # Identifier-heavy sentences ("Return foo_bar(x, y).") read as code.
    words = s.split()
    return sum("_" in w or "(" in w for w in words) <= 0.1 * len(words)


def build(count: int = COUNT, seed: int = SEED) -> list[str]:
    pool = sorted({s for name in MODULES for doc in _docstrings(name) for s in _sentences(doc) if _keep(s)})
    rng = random.Random(seed)
    chosen: list[str] = []
    for i, (name, lo, hi) in enumerate(BANDS):
        band = [s for s in pool if lo <= len(s) <= hi]
        want = count // len(BANDS) + (1 if i < count % len(BANDS) else 0)
        if len(band) < want:
            raise SystemExit(f"only {len(band)} {name} sentences available, need {want}")
        chosen.extend(rng.sample(band, want))
    rng.shuffle(chosen)
    return chosen


def build_calibration(count: int = 200, seed: int = SEED + 1) -> list[str]:
    """Sentences disjoint from the evaluation set, so int8 is not calibrated on what it is judged on."""
    evaluation = set(build())
    pool = sorted({s for name in MODULES for doc in _docstrings(name) for s in _sentences(doc) if _keep(s)} - evaluation)
    return random.Random(seed).sample(pool, count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=("eval", "calibration"), default="eval")
    parser.add_argument("--out", type=Path, help="output file (default: data/<kind>_sentences.txt)")
    args = parser.parse_args(argv)
    args.out = args.out or DEFAULT_OUT.with_name(f"{args.kind}_sentences.txt")
    sentences = build() if args.kind == "eval" else build_calibration()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(s + "\n" for s in sentences), encoding="utf-8")
    print(f"wrote {len(sentences)} sentences to {args.out} (Python {sys.version.split()[0]})")
    hist = Counter(min(len(s) // 25, 11) for s in sentences)
    for b in sorted(hist):
        label = f"{b * 25:3d}-{b * 25 + 24:3d}" if b < 11 else "275-300"
        print(f"  {label}: {hist[b]:4d} {'#' * (hist[b] // 2)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
