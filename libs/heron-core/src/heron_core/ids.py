"""Opaque, prefixed, random IDs (``svc_9f3k…``): the prefix tells a person what an ID names."""

import secrets

_ALPHABET = "0123456789abcdefghijkmnopqrstuvwxyz"  # no 'l': easy to misread as '1'
_ID_RANDOM_CHARS = 20  # 35**20 ≈ 2**102: collisions are not a concern


def new_id(prefix: str) -> str:
    """A fresh ID such as ``svc_3k9x…``; ``prefix`` names the kind of object."""
    body = "".join(secrets.choice(_ALPHABET) for _ in range(_ID_RANDOM_CHARS))
    return f"{prefix}_{body}"
