"""Folders as bytes between the driver and a farm node: a tar.gz whose bytes depend only on the files, its sha256
checked on arrival, unpacked with the bundle reader's checks (no links, no names outside the folder) into a staging
folder that is published (renamed into place) only when complete. Only kiln's own bytes and JSON cross the wire,
never a pickled object."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
import zlib
from pathlib import Path

from kiln.artifact.bundle import unpack_members
from kiln.errors import VerificationError


def pack(root: Path) -> tuple[bytes, str]:
    """Every regular file under `root` as (tar.gz bytes, sha256 of them)."""
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=1) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for file in sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()):
                info = tarfile.TarInfo(file.relative_to(root).as_posix())
                info.size, info.mode, info.mtime = file.stat().st_size, 0o755 if os.access(file, os.X_OK) else 0o644, 0
                with open(file, "rb") as handle:
                    tar.addfile(info, handle)
    data = buffer.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def unpack(data: bytes, sha256: str, folder: Path) -> Path:
    """Check `data` against `sha256`, then unpack it into `folder` (an empty staging folder the caller publishes or
    discards). The sha256 travels with the bytes, so it catches damage on the way, not a hostile sender (Ray's token
    authentication keeps strangers off the cluster); the unpacking trusts the bytes no more than a bundle's."""
    if hashlib.sha256(data).hexdigest() != sha256:
        raise VerificationError(f"the bytes received for {folder.name} do not match their sha256",
                                hint="the transfer was damaged: run the cell again")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            unpack_members(tar, folder)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise VerificationError(f"the bytes received for {folder.name} are not a readable tar.gz ({error})",
                                hint="run the cell again; a node running another kiln sends what this one cannot "
                                     "read") from None
    return folder
