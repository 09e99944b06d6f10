"""The forwarder header's fields: addresses, ports, names — their rules, encoding and decoding.

Pure functions over bytes and strings. Every violation is a ``ValueError`` whose message is fit
for the other side's log; ``header`` turns them into ``HeaderError(BAD_HEADER)`` in one place.
"""

import ipaddress
import re
import socket
import struct
from enum import IntEnum

from heron_tunnel.sockets import is_canonical_ipv4

MAX_DOMAIN_CHARS = 253
MAX_SERVICE_ID_CHARS = 64
MAX_PORT = 0xFFFF

_PORT = struct.Struct("!H")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?", re.ASCII)
_SERVICE_ID = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_DIGITS = re.compile(r"[0-9]+", re.ASCII)


class AddressType(IntEnum):
    IPV4 = 1
    IPV6 = 2
    DOMAIN = 3


_IPV4_TYPE = bytes((AddressType.IPV4,))


def normalise_target(host: str) -> str:
    """The canonical text of an IP address, or a valid domain name in lower case."""
    if is_canonical_ipv4(host):  # the common case, answered at once
        return host
    if is_ip(host):
        return normalise_ip(host, "target address")
    domain = host.lower()
    labels = domain.split(".")
    if not (
        domain.isascii()
        and 0 < len(domain) <= MAX_DOMAIN_CHARS
        and all(_LABEL.fullmatch(label) for label in labels)
    ):
        raise ValueError(f"target {host!r} is not a valid domain name")
    if _DIGITS.fullmatch(labels[-1]):
        # resolvers read "127.1" or "2130706433" as IPv4 addresses (inet_aton), past an allow-list
        raise ValueError(f"target {host!r} has an all-numeric last label")
    return domain


def normalise_ip(text: str, field: str) -> str:
    """The canonical text of the IP address ``text``; scoped IPv6 addresses cannot be sent."""
    if is_canonical_ipv4(text):
        return text
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"{field} {text!r} is not an IP address") from None
    if isinstance(address, ipaddress.IPv6Address) and address.scope_id is not None:
        raise ValueError(f"{field} {text!r} has a scope id")
    return str(address)


def is_ip(text: str) -> bool:
    if is_canonical_ipv4(text):
        return True
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def check_port(field: str, port: int, *, low: int) -> None:
    if not low <= port <= MAX_PORT:
        raise ValueError(f"{field} {port} is out of range {low}-{MAX_PORT}")


def check_service_id(service_id: str) -> None:
    if len(service_id) > MAX_SERVICE_ID_CHARS:
        raise ValueError(
            f"service id of {len(service_id)} characters exceeds {MAX_SERVICE_ID_CHARS}"
        )
    if not service_id.isascii() or not _SERVICE_ID.fullmatch(service_id):
        raise ValueError(f"service id {service_id!r} is not made of [A-Za-z0-9_-]")


_SERVICE_ID_BYTES = re.compile(rb"[A-Za-z0-9_-]{0,%d}" % MAX_SERVICE_ID_CHARS)


def is_service_id(raw: bytes) -> bool:
    """Whether ``raw`` is a valid service id, as it travels (``check_service_id``'s rules)."""
    return _SERVICE_ID_BYTES.fullmatch(raw) is not None


def encode_address(host: str) -> bytes:
    """An address field for ``host``, which ``normalise_target`` or ``normalise_ip`` returned."""
    if is_canonical_ipv4(host):
        return _IPV4_TYPE + socket.inet_pton(socket.AF_INET, host)
    if not is_ip(host):
        return bytes((AddressType.DOMAIN,)) + encode_short_string(host)
    address = ipaddress.ip_address(host)
    kind = AddressType.IPV4 if address.version == 4 else AddressType.IPV6
    return bytes((kind,)) + address.packed


def encode_canonical_ipv4(text: str) -> bytes | None:
    """The address field of ``text`` if it is an IPv4 address as ``ipaddress`` writes it, else
    None (another kind of address, or not one: the general path)."""
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except (OSError, ValueError):  # ValueError: an embedded NUL
        return None
    return _IPV4_TYPE + packed if socket.inet_ntoa(packed) == text else None


def encode_port(port: int) -> bytes:
    return _PORT.pack(port)


def encode_short_string(text: str) -> bytes:
    raw = text.encode("ascii")
    return bytes((len(raw),)) + raw


class Cursor:
    """Reads a request body's fields in order; running past its end is an error."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int, field: str) -> bytes:
        if self._at + n > len(self._data):
            raise ValueError(f"forward request body ends inside the {field}")
        self._at += n
        return self._data[self._at - n : self._at]

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def u16(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def short_string(self, field: str) -> str:
        raw = self.take(self.u8(field), field)
        if not raw.isascii():
            raise ValueError(f"{field} is not ASCII")
        return raw.decode("ascii")

    def address(self, field: str, *, allow_domain: bool) -> str:
        """An address's text, not yet normalised (``ForwardRequest`` does that)."""
        kind = self.u8(field)
        if kind == AddressType.IPV4:
            return socket.inet_ntoa(self.take(4, field))  # dotted quad, as ipaddress writes it
        if kind == AddressType.IPV6:
            return str(ipaddress.IPv6Address(self.take(16, field)))
        if kind == AddressType.DOMAIN and allow_domain:
            domain = self.short_string(field)
            if is_ip(domain):  # one request, one encoding: IP addresses travel as IP addresses
                raise ValueError(f"{field} {domain!r} is an IP address sent as a domain")
            return domain
        raise ValueError(f"unknown {field} type {kind}")

    def finish(self) -> None:
        if extra := len(self._data) - self._at:
            raise ValueError(f"forward request body has {extra} trailing bytes")
