"""Reproducible bundles: the artifact as one .tar.gz whose bytes depend only on the files in it.

Entries are sorted, owners are 0/0 with no names, modes are 0644 (0755 for folders and the runner),
every mtime is SOURCE_DATE_EPOCH (default 0), and the gzip header has no name and mtime 0. The bundle
holds manifest.json, its signature if any, and exactly the files the manifest lists; the measurement
files (report.*) travel beside it, since timings differ on every run.

Reading a bundle never trusts it: members must be regular files or folders with plain relative
names, no duplicates, and every file must be listed in the manifest with its size and sha256.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import uuid
from pathlib import Path, PurePosixPath

from kiln.artifact.manifest import MANIFEST_NAME, SIGNATURE_NAME
from kiln.artifact.paths import path_problem
from kiln.errors import UsageError, one_line

EXECUTABLE = frozenset({"run.py"})
_MAX_MEMBERS = 100_000


def _mtime() -> int:
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    return int(value) if value.isdigit() else 0


def bundle_members(root: Path, manifest: dict) -> list[str]:
    """What goes into the bundle: the manifest, its signature, and the files it lists, sorted."""
    names = [MANIFEST_NAME] + [entry["path"] for entry in manifest["files"]]
    if (root / SIGNATURE_NAME).is_file():
        names.append(SIGNATURE_NAME)
    return sorted(names)


def _folders(names: list[str]) -> list[str]:
    folders = set()
    for name in names:
        parent = PurePosixPath(name).parent
        while str(parent) != ".":
            folders.add(str(parent))
            parent = parent.parent
    return sorted(folders)


def write_bundle(root: Path, manifest: dict, path: Path) -> Path:
    """Write the bundle of the artifact at `root` to `path` atomically (a hidden sibling, then rename)."""
    names = bundle_members(root, manifest)
    mtime = _mtime()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.kiln-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        with open(partial, "wb") as raw:
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
                    entries = [(n, True) for n in _folders(names)] + [(n, False) for n in names]
                    for name, folder in sorted(entries):
                        info = tarfile.TarInfo(name)
                        info.uid = info.gid = 0
                        info.uname = info.gname = ""
                        info.mtime = mtime
                        if folder:
                            info.type, info.mode = tarfile.DIRTYPE, 0o755
                            tar.addfile(info)
                            continue
                        file = root / name
                        info.size = file.stat().st_size
                        info.mode = 0o755 if name in EXECUTABLE else 0o644
                        with open(file, "rb") as handle:
                            tar.addfile(info, handle)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def safe_name(name: str) -> str:
    """A member name that stays inside the folder it is unpacked into, or a UsageError naming it (the text is
    checked before any filesystem call: a NUL byte or an over-long name is refused, not a ValueError)."""
    problem = path_problem(name.removesuffix("/")) if isinstance(name, str) and name != "/" else "is absolute"
    if problem is None and ":" in PurePosixPath(name).parts[0]:
        problem = "names a drive"
    if problem is not None:
        raise UsageError(f"bundle entry {one_line(repr(name))[:120]} points outside the bundle: it {problem}",
                         hint="refusing to unpack it: the bundle was not written by kiln or was tampered with")
    return str(PurePosixPath(name))


def check_member(member: tarfile.TarInfo) -> None:
    safe_name(member.name)
    if member.issym() or member.islnk():
        raise UsageError(f"bundle entry '{member.name}' is a link", hint="refusing to unpack it: kiln bundles "
                                                                         "hold only files and folders")
    if not (member.isfile() or member.isdir()):
        raise UsageError(f"bundle entry '{member.name}' is a device, fifo or other special file",
                         hint="refusing to unpack it: kiln bundles hold only files and folders")


def open_bundle(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:gz")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise UsageError(f"{path} is not a readable .tar.gz bundle ({exc})",
                         hint="give the .tar.gz that `kiln export --bundle` wrote, or an artifact folder") from None


def read_members(path: Path) -> tuple[dict[str, bytes | None], dict[str, tuple[str, int]]]:
    """(small files' bytes by name, {name: (sha256, size)} for every file), checking every member first.

    Files are hashed while streaming, so a large or hostile bundle is never written to disk here.
    """
    contents: dict[str, bytes | None] = {}
    digests: dict[str, tuple[str, int]] = {}
    with open_bundle(path) as tar:
        count = 0
        try:
            for member in tar:
                count += 1
                if count > _MAX_MEMBERS:
                    raise UsageError(f"{path} has more than {_MAX_MEMBERS} entries", hint="not a kiln bundle")
                check_member(member)
                name = safe_name(member.name)
                if member.isdir():
                    continue
                if name in digests:
                    raise UsageError(f"bundle entry '{name}' appears twice",
                                     hint="refusing it: a second copy would silently replace the first")
                digest, keep = hashlib.sha256(), name in (MANIFEST_NAME, SIGNATURE_NAME)
                buffer = io.BytesIO() if keep else None
                handle = tar.extractfile(member)
                while block := handle.read(1 << 20):
                    digest.update(block)
                    if buffer is not None:
                        if buffer.tell() > 64 << 20:
                            raise UsageError(f"bundle entry '{name}' is too large", hint="not a kiln bundle")
                        buffer.write(block)
                digests[name] = (digest.hexdigest(), member.size)
                contents[name] = buffer.getvalue() if buffer is not None else None
            _check_end(tar, path)
        except (tarfile.TarError, EOFError, OSError, gzip.BadGzipFile) as exc:
            raise UsageError(f"{path} is truncated or corrupt ({exc})", hint="download or export the bundle again") \
                from None
    return contents, digests


def _check_end(tar: tarfile.TarFile, path: Path) -> None:
    """Only zero blocks may follow the last member: tarfile stops quietly at a damaged header, and whatever
    comes after it (members GNU tar would still unpack) must not hide from verification."""
    tar.fileobj.seek(tar.offset)
    while block := tar.fileobj.read(1 << 20):
        if block.strip(b"\0"):
            raise UsageError(f"{path} has data after its last readable entry",
                             hint="refusing it: a damaged header can hide entries from verification")


def extract_bundle(path: Path, dest: Path) -> Path:
    """Unpack a bundle (already verified) into `dest`, atomically: a hidden sibling, then rename."""
    if dest.exists():
        raise UsageError(f"{dest} already exists", hint="give a new folder to unpack into")
    from kiln.artifact.publish import check_parents

    check_parents(dest, "unpack folder")
    partial = dest.with_name(f".{dest.name}.kiln-tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial.mkdir()
    except OSError as exc:
        raise UsageError(f"cannot write into {dest.parent} ({exc.strerror})", hint="unpack somewhere writable") \
            from None
    try:
        with open_bundle(path) as tar:
            unpack_members(tar, partial)
        os.rename(partial, dest)
    finally:
        if partial.exists():
            shutil.rmtree(partial, ignore_errors=True)
    return dest


def unpack_members(tar: tarfile.TarFile, folder: Path) -> None:
    """Every member of `tar` into `folder`, each checked first: only plain files and folders with names that stay
    inside it, none twice."""
    for member in tar:
        check_member(member)
        target = folder / safe_name(member.name)
        if target.exists() and not member.isdir():
            raise UsageError(f"bundle entry '{member.name}' appears twice", hint="refusing it")
        if member.isdir():
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with tar.extractfile(member) as src, open(target, "xb") as out:
            shutil.copyfileobj(src, out)
        os.chmod(target, 0o755 if member.mode & 0o100 else 0o644)
