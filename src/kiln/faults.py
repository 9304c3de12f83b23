"""Fault injection for the reliability tests: pause at a named point so a test can kill -9 the process there.

`KILN_PAUSE_AT=compile` (a stage name, or one of the points below) makes the process print
`kiln: paused at compile` on stderr and sleep; tests/integration/test_faults.py then kills it and checks
that the output path holds nothing or the previous artifact, and that the next run cleans up. With
`KILN_PAUSE_FILE=PATH` the pause is also written to that file. Unset, this costs one environment lookup per point.

Points besides the stage names: `publish-swap` (the previous artifact moved aside, the new one not yet in
place), `cache-store` (a cache entry fully written in tmp/, not yet renamed into place).
"""

from __future__ import annotations

import os
import sys
import time


def point(name: str) -> None:
    if os.environ.get("KILN_PAUSE_AT") == name:
        print(f"kiln: paused at {name}", file=sys.stderr, flush=True)
        if os.environ.get("KILN_PAUSE_FILE"):  # for a process whose stderr the test cannot read (a Ray worker)
            with open(os.environ["KILN_PAUSE_FILE"], "a") as handle:
                handle.write(f"{os.getpid()} {name}\n")
        time.sleep(float(os.environ.get("KILN_PAUSE_SECONDS", "120")))
