"""Progress for people: one line per stage on stderr, with its time and a short result."""

from __future__ import annotations

import contextlib
import sys
import time

from kiln import faults
from kiln.errors import KilnError


_ACTIVE: list = []  # (progress, stage name) of the stage running now, for `report`


def report(text: str) -> None:
    """A line of progress from deep inside a stage (a search's step): it overwrites the stage's line on a
    terminal, and is one indented line in a log."""
    if not _ACTIVE:
        return
    progress, name = _ACTIVE[-1]
    if not progress.enabled:
        return
    if progress._tty:
        print(f"\x1b[2K  … {name:<10} {text}", end="\r", file=progress.stream, flush=True)
    else:
        print(f"      {name}: {text}", file=progress.stream, flush=True)


class Progress:
    def __init__(self, enabled: bool = True, stream=None):
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.timings: dict[str, float] = {}
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def say(self, text: str) -> None:
        if self.enabled:
            print(text, file=self.stream, flush=True)

    @contextlib.contextmanager
    def stage(self, name: str, what: str = ""):
        """Time a stage; the body may set `.result` on the yielded object to a short summary."""
        holder = type("StageResult", (), {"result": ""})()
        faults.point(name)
        if self.enabled and self._tty:
            print(f"  … {name:<10} {what}", end="\r", file=self.stream, flush=True)
        start = time.perf_counter()
        _ACTIVE.append((self, name))
        try:
            yield holder
        except BaseException as exc:
            if isinstance(exc, KilnError) and exc.stage is None:
                exc.stage = name
            self.timings[name] = time.perf_counter() - start
            self.say(f"  ✗ {name:<10} {self.timings[name]:6.1f}s  failed")
            raise
        finally:
            _ACTIVE.pop()
        self.timings[name] = time.perf_counter() - start
        clear = "\x1b[2K" if self._tty else ""
        self.say(f"{clear}  ✓ {name:<10} {self.timings[name]:6.1f}s  {holder.result}")
