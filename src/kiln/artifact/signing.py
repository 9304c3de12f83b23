"""Ed25519 signatures over manifest.json (which holds the sha256 of every other file).

Keys are PEM files as `openssl genpkey -algorithm ed25519` writes them, or `kiln keygen`. Ed25519
signatures are deterministic, so a signed bundle stays reproducible. Needs the `cryptography`
package (the `sign` extra), imported only here.
"""

from __future__ import annotations

import base64
from pathlib import Path

from kiln._deps import require
from kiln.errors import UsageError, VerificationError

SIGNATURE_FORMAT = "kiln.signature/1 ed25519"


def _load(path: Path, private: bool):
    require("cryptography", why="signing and verifying signatures")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    what = "private" if private else "public"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read the {what} key {path} ({exc.strerror})", hint="give a PEM key file") from None
    try:
        key = (serialization.load_pem_private_key(data, password=None) if private
               else serialization.load_pem_public_key(data))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM {what} key ({str(exc).splitlines()[0][:120]})",
                         hint="create one with `kiln keygen KEY` or `openssl genpkey -algorithm ed25519`") from None
    expected = ed25519.Ed25519PrivateKey if private else ed25519.Ed25519PublicKey
    if not isinstance(key, expected):
        raise UsageError(f"{path} is not an Ed25519 key", hint="kiln signs with Ed25519 only")
    return key


def load_private_key(path: Path):
    """The key, or a one-line error now (before an export spends minutes and then cannot sign)."""
    return _load(path, True)


def sign(manifest_bytes: bytes, private_key: Path) -> str:
    """The signature file's text: the format line and the base64 signature."""
    signature = _load(private_key, True).sign(manifest_bytes)
    return f"{SIGNATURE_FORMAT}\n{base64.b64encode(signature).decode()}\n"


def check(manifest_bytes: bytes, signature_text: str, public_key: Path) -> None:
    """Raise a VerificationError unless `signature_text` is a valid signature of the manifest by `public_key`."""
    from cryptography.exceptions import InvalidSignature

    key = _load(public_key, False)
    lines = signature_text.strip().splitlines()
    if len(lines) != 2 or lines[0] != SIGNATURE_FORMAT:
        raise VerificationError("the signature file is malformed", hint="sign the artifact again with --sign-key")
    try:
        key.verify(base64.b64decode(lines[1], validate=True), manifest_bytes)
    except (InvalidSignature, ValueError):
        raise VerificationError("the manifest's signature does not verify with this public key",
                         hint="the manifest was changed after signing, or it was signed with another key") from None


def keygen(path: Path) -> tuple[Path, Path]:
    """Write PATH (private, mode 0600) and PATH.pub (public), both PEM."""
    require("cryptography", why="signing and verifying signatures")
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public = path.with_name(path.name + ".pub")
    if not path.absolute().parent.is_dir():
        raise UsageError(f"folder {path.absolute().parent} does not exist", hint="create it first, or choose another path")
    for p in (path, public):
        if p.exists():
            raise UsageError(f"{p} already exists", hint="kiln never overwrites a key; choose another name")
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                     serialization.PublicFormat.SubjectPublicKeyInfo))
    return path, public
