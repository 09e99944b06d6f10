"""The WireGuard overlay: its network, WireGuard keys, and how a free address is chosen.

Every peer and every edge key gets one address of ``OVERLAY_NETWORK`` (the shared address space
of RFC 6598, as NetBird uses it); the database decides uniqueness, this module only proposes.
"""

import base64
import binascii
import ipaddress
import random
from collections.abc import Collection

OVERLAY_NETWORK = ipaddress.IPv4Network("100.64.0.0/10")
#: the first and last usable addresses: never the network address nor the broadcast
_FIRST = int(OVERLAY_NETWORK.network_address) + 1
_LAST = int(OVERLAY_NETWORK.broadcast_address) - 1
#: random proposals per round; in a sparse space the first one is nearly always free
CANDIDATES_PER_ROUND = 16

WIREGUARD_KEY_CHARS = 44  # base64 of 32 bytes, with one '=' of padding
_WIREGUARD_KEY_BYTES = 32


def candidate_addresses(rng: random.Random, count: int = CANDIDATES_PER_ROUND) -> list[str]:
    """``count`` random usable addresses of the overlay, for the caller to test against the DB."""
    return [str(ipaddress.IPv4Address(rng.randint(_FIRST, _LAST))) for _ in range(count)]


def first_free_address(taken: Collection[str]) -> str | None:
    """The lowest usable address not in ``taken``, or None when the overlay is full."""
    candidate = _FIRST
    for value in sorted(int(ipaddress.IPv4Address(address)) for address in taken):
        if value > candidate:
            break
        if value == candidate:
            candidate += 1
    return str(ipaddress.IPv4Address(candidate)) if candidate <= _LAST else None


def pick_free(candidates: list[str], taken: Collection[str]) -> str | None:
    return next((address for address in candidates if address not in taken), None)


def is_usable(address: str) -> bool:
    value = int(ipaddress.IPv4Address(address))
    return _FIRST <= value <= _LAST


def check_wireguard_key(key: str) -> str:
    """``key`` if it is a WireGuard public key as ``wg pubkey`` prints it; ValueError otherwise."""
    if len(key) != WIREGUARD_KEY_CHARS:
        raise ValueError(
            f"a WireGuard public key is {WIREGUARD_KEY_CHARS} base64 characters, not {len(key)}"
        )
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"WireGuard public key {key!r} is not base64") from exc
    if len(raw) != _WIREGUARD_KEY_BYTES:
        raise ValueError(f"WireGuard public key {key!r} does not hold 32 bytes")
    return key
