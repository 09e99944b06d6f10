"""Heron's secret tokens: a 4-character prefix + 30 random base62 characters + a CRC32 checksum.

API tokens (``hrn_``), setup keys (``hsk_``), peer tokens (``hpt_``) and proxy tokens (``hpx_``)
share the format. The prefix and checksum let secret scanners recognise a leaked Heron secret,
and the prefix tells a person which kind it is. Tokens are random 178-bit secrets, so a fast
SHA-256 of them is a safe stored form (a slow hash protects low-entropy secrets like passwords,
which these are not).
"""

import hashlib
import secrets
import string
import zlib

TOKEN_PREFIX = "hrn_"  # noqa: S105  (the public prefix, not a secret)
SETUP_KEY_PREFIX = "hsk_"
PEER_TOKEN_PREFIX = "hpt_"  # noqa: S105
PROXY_TOKEN_PREFIX = "hpx_"  # noqa: S105
_BASE62 = string.digits + string.ascii_letters
_RANDOM_CHARS = 30
_CHECKSUM_CHARS = 6
TOKEN_CHARS = len(TOKEN_PREFIX) + _RANDOM_CHARS + _CHECKSUM_CHARS
_HINT_CHARS = len(TOKEN_PREFIX) + 4


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_CHARS)


def generate_token(prefix: str = TOKEN_PREFIX) -> str:
    body = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_CHARS))
    return f"{prefix}{body}{_checksum(body)}"


def token_hash(token: str) -> str:
    """The stored form of a token (also of an operator-chosen HERON_ADMIN_TOKEN)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_hint(token: str) -> str:
    """What a listing shows so a person can tell tokens apart: ``hrn_Ab3…``."""
    return token[:_HINT_CHARS] + "…"
