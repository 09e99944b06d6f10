"""A new peer's name: its host name, made unique in its account (``web``, ``web-2``, …)."""

import re
import secrets
from collections.abc import Collection

MAX_NAME_CHARS = 255
DEFAULT_NAME = "peer"
_UNSAFE = re.compile(r"[^\w.-]+")  # host names are labels; anything else becomes '-'


def base_name(hostname: str) -> str:
    cleaned = _UNSAFE.sub("-", hostname.strip()).strip("-.")
    return cleaned[: MAX_NAME_CHARS - 8] or DEFAULT_NAME


def unique_name(base: str, taken: Collection[str], *, attempt: int = 0) -> str:
    """``base``, or the lowest ``base-N`` free; after a lost race, a random suffix instead."""
    if attempt > 0:
        return f"{base}-{secrets.token_hex(3)}"
    if base not in taken:
        return base
    number = 2
    while f"{base}-{number}" in taken:
        number += 1
    return f"{base}-{number}"
