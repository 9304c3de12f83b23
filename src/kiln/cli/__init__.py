"""The `kiln` command: a thin layer over the API. Imports nothing heavy until a command runs.

parser.py holds every command's options; export.py, bench.py and tools.py run the commands; this module maps a
command to its function and turns kiln's errors into one line and an exit code."""

from __future__ import annotations

import errno
import os
import sys

from kiln.artifact.manifest import dumps
from kiln.cli.bench import cmd_bench
from kiln.cli.export import cmd_build, cmd_export
from kiln.cli.parser import build_parser
from kiln.cli.tools import (cmd_build_engine, cmd_build_llama_cpp, cmd_cache, cmd_compare, cmd_keygen, cmd_node_labels,
                            cmd_targets, cmd_verify)
from kiln.errors import KilnError

__all__ = ["build_parser", "main"]

_DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler = {"export": cmd_export, "bench": cmd_bench, "targets": cmd_targets,
               "build-engine": cmd_build_engine, "build-llama-cpp": cmd_build_llama_cpp, "verify": cmd_verify,
               "compare": cmd_compare, "cache": cmd_cache, "keygen": cmd_keygen,
               "node-labels": cmd_node_labels, "build": cmd_build}[args.command]
    try:
        return handler(args)
    except KilnError as error:
        if getattr(args, "debug", False):
            raise
        if getattr(args, "json", False):
            from kiln.pipeline import failure_report

            print(dumps(getattr(error, "report", None) or failure_report(error)))
        print(f"kiln: error: {error.one_line()}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("kiln: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `kiln targets | head`: the reader left, which is not kiln's error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except OSError as exc:
        if exc.errno not in _DISK_FULL or getattr(args, "debug", False):
            raise
        from kiln.errors import ExportError

        error = ExportError(f"{os.strerror(exc.errno).lower()} writing {exc.filename or 'a file'}",
                            hint="free some space (or raise the file-size limit) and run again; nothing half-written "
                                 "was left at the output path")
        if getattr(args, "json", False):
            from kiln.pipeline import failure_report

            print(dumps(failure_report(error)))
        print(f"kiln: error: {error.one_line()}", file=sys.stderr)
        return error.exit_code

