"""Heron's secret tokens: a 4-character prefix + 30 random base62 characters + a CRC32 checksum.

API tokens (``hrn_``), setup keys (``hsk_``), peer tokens (``hpt_``) and proxy tokens (``hpx_``)
share the format. The prefix and checksum let secret scanners recognise a leaked Heron secret,
and the prefix tells a person which kind it is. Management issues them; the stack runner makes
the embedded edge's proxy token itself, so the format lives here, where both can reach it.
"""

import secrets
import string
import zlib

TOKEN_PREFIX = "hrn_"  # noqa: S105  (the public prefix, not a secret)
SETUP_KEY_PREFIX = "hsk_"
PEER_TOKEN_PREFIX = "hpt_"  # noqa: S105
PROXY_TOKEN_PREFIX = "hpx_"  # noqa: S105
_BASE62 = string.digits + string.ascii_letters
_PREFIX_CHARS = len(TOKEN_PREFIX)
_RANDOM_CHARS = 30  # 178 bits
_CHECKSUM_CHARS = 6
TOKEN_CHARS = _PREFIX_CHARS + _RANDOM_CHARS + _CHECKSUM_CHARS


def generate_token(prefix: str = TOKEN_PREFIX) -> str:
    body = "".join(secrets.choice(_BASE62) for _ in range(_RANDOM_CHARS))
    return f"{prefix}{body}{_checksum(body)}"


def is_well_formed(token: str, prefix: str) -> bool:
    """Whether ``token`` is one ``generate_token(prefix)`` could have made (checksum included)."""
    if len(token) != TOKEN_CHARS or not token.startswith(prefix):
        return False
    body, checksum = token[_PREFIX_CHARS:-_CHECKSUM_CHARS], token[-_CHECKSUM_CHARS:]
    return all(c in _BASE62 for c in body) and secrets.compare_digest(checksum, _checksum(body))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), _CHECKSUM_CHARS)


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))
