"""API token format: ``hrn_`` + 30 random base62 characters + a 6-character CRC32 checksum.

The prefix and checksum let secret scanners recognise a leaked Heron token. Tokens are random 178-bit secrets, so a fast SHA-256 of them is a safe
stored form (a slow hash protects low-entropy secrets like passwords, which these are not).
"""

import hashlib
import secrets
import string
import zlib

TOKEN_PREFIX = "hrn_"  # noqa: S105  (the public prefix, not a secret)
_BASE62 = string.digits + string.ascii_letters
_RANDOM_CHARS = 30
_CHECKSUM_CHARS = 6
TOKEN_CHARS = len(TOKEN_PREFIX) + _RANDOM_CHARS + _CHECKSUM_CHARS


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_CHARS)


def generate_token() -> str:
    body = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_CHARS))
    return f"{TOKEN_PREFIX}{body}{_checksum(body)}"


def token_hash(token: str) -> str:
    """The stored form of a token (also of an operator-chosen HERON_ADMIN_TOKEN)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_hint(token: str) -> str:
    """What a listing shows so a person can tell tokens apart: ``hrn_Ab3…``."""
    return token[: len(TOKEN_PREFIX) + 4] + "…"
