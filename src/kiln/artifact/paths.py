"""Paths read from documents and bundles, checked as text before any filesystem call.

A manifest, a bundle member, runtime.json or build.json names files inside an artifact. Such a name is
untrusted text: a NUL byte makes every os call raise ValueError, a lone surrogate raises UnicodeEncodeError,
'..' or an absolute path leaves the folder, a backslash, an empty or '.' segment names different files on
different systems, and an over-long name fails in the kernel. Each is refused here with one line that says
which document held it, before `Path` ever reaches the filesystem.
"""

from __future__ import annotations

import re

from kiln.errors import KilnError, UsageError, one_line

MAX_PATH_BYTES = 4096  # PATH_MAX on Linux
MAX_NAME_BYTES = 255  # NAME_MAX on Linux, macOS and Windows filesystems
_DRIVE = re.compile(r"^[A-Za-z]:")


def path_problem(text: object) -> str | None:
    """What is wrong with `text` as a POSIX path relative to an artifact's root, or None when nothing is."""
    if not isinstance(text, str):
        return f"is a {type(text).__name__}, not a path"
    if not text:
        return "is empty"
    if "\x00" in text:
        return "holds a NUL byte"
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        return "holds a control character"
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:
        return "is not valid Unicode text (a lone surrogate)"
    if "\\" in text:
        return "holds a backslash (artifact paths use '/')"
    if text.startswith("/") or _DRIVE.match(text):
        return "is absolute"
    if len(encoded) > MAX_PATH_BYTES:
        return f"is longer than {MAX_PATH_BYTES} bytes"
    for segment in text.split("/"):
        if segment == "..":
            return "climbs out of the artifact with '..'"
        if segment in ("", "."):
            return "has an empty or '.' segment"
        if len(segment.encode("utf-8")) > MAX_NAME_BYTES:
            return f"has a name longer than {MAX_NAME_BYTES} bytes"
    return None


def checked_relative_path(text: object, where: str, *, error: type[KilnError] = UsageError,
                          hint: str = "the document was damaged or edited by hand; export the artifact again") -> str:
    """`text` when it is a safe relative path; else `error` naming `where` (e.g. "manifest.json files[3].path")."""
    problem = path_problem(text)
    if problem is not None:
        shown = one_line(repr(text) if isinstance(text, str) else type(text).__name__)[:120]
        raise error(f"{where} {shown} {problem}", hint=hint)
    return text
