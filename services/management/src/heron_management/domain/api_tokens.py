"""Heron's secret tokens as management stores and shows them.

The format (prefix, random body, checksum) is ``heron_core.secret_tokens``'s, re-exported here.
Tokens are random 178-bit secrets, so a fast SHA-256 of them is a safe stored form (a slow hash
protects low-entropy secrets like passwords, which these are not).
"""

import hashlib

from heron_core.secret_tokens import (
    PEER_TOKEN_PREFIX,
    PROXY_TOKEN_PREFIX,
    SETUP_KEY_PREFIX,
    TOKEN_CHARS,
    TOKEN_PREFIX,
    generate_token,
    is_well_formed,
)

__all__ = [
    "PEER_TOKEN_PREFIX",
    "PROXY_TOKEN_PREFIX",
    "SETUP_KEY_PREFIX",
    "TOKEN_CHARS",
    "TOKEN_PREFIX",
    "generate_token",
    "is_well_formed",
    "token_hash",
    "token_hint",
]

_HINT_CHARS = len(TOKEN_PREFIX) + 4


def token_hash(token: str) -> str:
    """The stored form of a token (also of an operator-chosen HERON_ADMIN_TOKEN)."""
    return hashlib.sha256(token.encode()).hexdigest()


def token_hint(token: str) -> str:
    """What a listing shows so a person can tell tokens apart: ``hrn_Ab3…``."""
    return token[:_HINT_CHARS] + "…"
