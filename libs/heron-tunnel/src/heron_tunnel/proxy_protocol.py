"""PROXY protocol version 2: tell a TCP backend who the client really is.

A backend behind the edge sees connections from the agent on its own peer; with
``proxy_protocol`` on, the edge writes this header before any byte of the client, and a
backend that expects it (HAProxy, nginx ``proxy_protocol``, Postgres poolers…) reads the
client's address and port from it. The format is haproxy.org's proxy-protocol.txt §2.2:

    12-byte signature | version 2 and command | family and transport | length (2 bytes)
    | source address | destination address | source port | destination port | TLVs

Both addresses are of one family: when the client and the listener differ (an IPv6 client on an
IPv4 listener), the IPv4 one is written as IPv4-mapped IPv6. ``parse`` is the reading side, for
tests and for whoever receives such headers; it accepts only what ``encode`` could have written
plus LOCAL headers and TLVs, and says how many more bytes it needs for a partial header.
"""

import ipaddress
import struct
from dataclasses import dataclass
from enum import IntEnum

from heron_core.errors import HeronError

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
HEADER = struct.Struct("!12sBBH")  # signature, version/command, family/transport, length
_V4 = struct.Struct("!4s4sHH")
_V6 = struct.Struct("!16s16sHH")
_VERSION = 0x20
#: a sane bound for one header: addresses plus a few TLVs (the spec allows 64 KiB)
MAX_LENGTH = 4096

Address = tuple[str, int]


class Command(IntEnum):
    LOCAL = 0x0  # a connection of the proxy's own (health checks): no client address
    PROXY = 0x1


class Transport(IntEnum):
    TCP = 0x1
    UDP = 0x2


class _Family(IntEnum):
    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2


class ProxyProtocolError(HeronError):
    """Not a PROXY v2 header, or a broken one."""


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    command: Command
    transport: Transport | None  # None for LOCAL / UNSPEC
    source: Address | None
    destination: Address | None
    tlvs: tuple[tuple[int, bytes], ...]
    size: int  # bytes of the header on the wire


@dataclass(frozen=True, slots=True)
class NeedMore:
    at_least: int


def encode(
    source: Address,
    destination: Address,
    *,
    transport: Transport = Transport.TCP,
    tlvs: tuple[tuple[int, bytes], ...] = (),
) -> bytes:
    """The header for a connection from ``source`` to ``destination`` (IP literals, ports)."""
    src_ip = ipaddress.ip_address(source[0])
    dst_ip = ipaddress.ip_address(destination[0])
    if src_ip.version != dst_ip.version:
        src_ip, dst_ip = _as_v6(src_ip), _as_v6(dst_ip)
    for port in (source[1], destination[1]):
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} is not 0-65535")
    if src_ip.version == 4:
        family = _Family.INET
        addresses = _V4.pack(src_ip.packed, dst_ip.packed, source[1], destination[1])
    else:
        family = _Family.INET6
        addresses = _V6.pack(src_ip.packed, dst_ip.packed, source[1], destination[1])
    extra = b"".join(struct.pack("!BH", kind, len(value)) + value for kind, value in tlvs)
    body = addresses + extra
    if len(body) > MAX_LENGTH:
        raise ValueError(f"a PROXY header of {len(body)} bytes is larger than {MAX_LENGTH}")
    return (
        HEADER.pack(SIGNATURE, _VERSION | Command.PROXY, (family << 4) | transport, len(body))
        + body
    )


def encode_local() -> bytes:
    """A LOCAL header: the proxy's own connection, no addresses."""
    return HEADER.pack(SIGNATURE, _VERSION | Command.LOCAL, 0, 0)


def _as_v6(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv6Address:
    if isinstance(address, ipaddress.IPv6Address):
        return address
    return ipaddress.IPv6Address(f"::ffff:{address}")


def parse(data: bytes | bytearray | memoryview) -> ProxyHeader | NeedMore:
    """Read a header from the start of ``data``; ``NeedMore`` when it is not all there yet."""
    view = bytes(data[: HEADER.size])
    if len(view) < HEADER.size:
        if not SIGNATURE.startswith(view[: len(SIGNATURE)]):
            raise ProxyProtocolError("not a PROXY protocol v2 header (bad signature)")
        return NeedMore(HEADER.size)
    signature, version_command, family_transport, length = HEADER.unpack(view)
    if signature != SIGNATURE:
        raise ProxyProtocolError("not a PROXY protocol v2 header (bad signature)")
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY protocol version {version_command >> 4}, not 2")
    try:
        command = Command(version_command & 0x0F)
    except ValueError:
        raise ProxyProtocolError(f"unknown PROXY command {version_command & 0x0F}") from None
    if length > MAX_LENGTH:
        raise ProxyProtocolError(f"a PROXY header of {length} bytes is larger than {MAX_LENGTH}")
    size = HEADER.size + length
    if len(data) < size:
        return NeedMore(size)
    body = bytes(data[HEADER.size : size])
    family_code, transport_code = family_transport >> 4, family_transport & 0x0F
    if command is Command.LOCAL or family_code == _Family.UNSPEC:
        return ProxyHeader(command, None, None, None, (), size)
    try:
        family, transport = _Family(family_code), Transport(transport_code)
    except ValueError:
        raise ProxyProtocolError(f"unsupported family/transport {family_transport:#04x}") from None
    layout = _V4 if family is _Family.INET else _V6
    if length < layout.size:
        raise ProxyProtocolError(f"{length} bytes cannot hold the {family.name} addresses")
    src, dst, src_port, dst_port = layout.unpack(body[: layout.size])
    source = (str(ipaddress.ip_address(src)), src_port)
    destination = (str(ipaddress.ip_address(dst)), dst_port)
    return ProxyHeader(
        command, transport, source, destination, _parse_tlvs(body[layout.size :]), size
    )


def _parse_tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    tlvs = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 3:
            raise ProxyProtocolError("a TLV is cut short")
        kind, length = struct.unpack_from("!BH", data, offset)
        offset += 3
        if len(data) - offset < length:
            raise ProxyProtocolError(f"TLV {kind:#04x} says {length} bytes, fewer remain")
        tlvs.append((kind, data[offset : offset + length]))
        offset += length
    return tuple(tlvs)
