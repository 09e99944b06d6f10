"""Slow hashes for low-entropy secrets (service passwords, PINs, header values): argon2id.

Parameters follow OWASP's argon2id minimum (m=19 MiB, t=2, p=1), as NetBird does, so hashes
carry over. Hashing takes tens of milliseconds: it runs in a worker thread, off the event loop.
"""

import asyncio

from argon2 import PasswordHasher

_HASHER = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1, hash_len=32, salt_len=16)


async def hash_secret(secret: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, secret)
