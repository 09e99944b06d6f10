"""Checking a password or PIN against the argon2id hash management stored.

``argon2``'s verify recomputes the hash from the PHC string's own parameters and compares in
constant time; it takes tens of milliseconds, so it runs in a worker thread.
"""

import asyncio
import re

import structlog
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

log = structlog.get_logger(__name__)

#: a PIN is 4 to 10 digits (docs/auth.md)
PIN_PATTERN = re.compile(r"[0-9]{4,10}")
#: longer secrets are not checked (a hash of megabytes is only work for the gateway)
MAX_SECRET_CHARS = 1024

_HASHER = PasswordHasher()


def is_pin(value: str) -> bool:
    return PIN_PATTERN.fullmatch(value) is not None


async def matches(secret: str, stored_hash: str) -> bool:
    if not secret or len(secret) > MAX_SECRET_CHARS:
        return False
    return await asyncio.to_thread(_verify, stored_hash, secret)


def _verify(stored_hash: str, secret: str) -> bool:
    try:
        return _HASHER.verify(stored_hash, secret)
    except VerificationError:
        return False
    except InvalidHashError:
        log.error("stored secret hash is not an argon2 hash: nobody can log in with it")
        return False
