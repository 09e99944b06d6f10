"""WireGuard key pairs: X25519 keys in WireGuard's encoding (32 bytes, standard base64).

``load_or_create_private_key`` is how a service gets its one long-lived key: the file is
created once, with mode 0600, so that no other user of the machine can read it, and a file that
others can read is refused rather than silently used (its key must be considered leaked).
"""

import base64
import binascii
import contextlib
import os
import stat
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

#: a Curve25519 key, private or public
KEY_BYTES = 32
#: permission bits that let anyone but the owner at the key
_OTHERS_MASK = stat.S_IRWXG | stat.S_IRWXO


def generate_private_key() -> str:
    """A new private key, clamped as ``wg genkey`` does (X25519 clamps anyway; this matches)."""
    raw = bytearray(X25519PrivateKey.generate().private_bytes_raw())
    raw[0] &= 248
    raw[31] = (raw[31] & 127) | 64
    return _encode(bytes(raw))


def public_key_of(private: str) -> str:
    """The public key of ``private``, as ``wg pubkey`` prints it."""
    secret = X25519PrivateKey.from_private_bytes(_decode(private))
    return _encode(secret.public_key().public_bytes_raw())


def parse_key(text: str) -> str:
    """``text`` as a canonical WireGuard key (surrounding whitespace removed); else ``ValueError``.

    The message never quotes ``text``: it may be a private key.
    """
    _decode(text.strip())
    return text.strip()


def load_or_create_private_key(path: Path) -> str:
    """The private key stored in ``path``; a new one, stored there first, if there is none.

    A missing parent directory is created with mode 0700. Creation is atomic and never replaces
    a key: the key goes to a 0600 temporary file that is then hard-linked to ``path``, so when
    two processes race, both end up with the one key that won. An existing file that group or
    others may access is refused with a ``PermissionError`` saying how to fix it.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        return _read_private_key(path)
    except FileNotFoundError:
        pass
    _publish_new_key(path, generate_private_key())
    return _read_private_key(path)


def _read_private_key(path: Path) -> str:
    with path.open("r", encoding="ascii", errors="replace") as file:
        mode = os.fstat(file.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"private key file {str(path)!r} is not a regular file")
        if mode & _OTHERS_MASK:
            raise PermissionError(
                f"private key file {str(path)!r} is accessible to group or others "
                f"(mode {stat.S_IMODE(mode):04o}); its key may have leaked: "
                f"run `chmod 600 {path}` if it has not, or delete it to get a new key"
            )
        text = file.read()
    try:
        return parse_key(text)
    except ValueError as exc:
        raise ValueError(f"private key file {str(path)!r}: {exc}") from None


def _publish_new_key(path: Path, key: str) -> None:
    """Write ``key`` to a 0600 temporary file and link it to ``path`` unless that exists by now."""
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as file:
            file.write(key + "\n")
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use its key
            os.link(temporary, path)
    finally:
        Path(temporary).unlink()
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable, so a crash cannot lose a key already in use."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _decode(text: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != KEY_BYTES or _encode(raw) != text:
        raise ValueError(
            f"not a WireGuard key: expected {KEY_BYTES} bytes in standard base64 "
            f"(44 characters ending in '='), got {len(text)} characters"
        )
    return raw


def _encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")
