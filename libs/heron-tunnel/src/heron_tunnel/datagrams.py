"""UDP datagrams carried over a stream, each as a big-endian u16 length and its payload.

A UDP service's session rides the same forwarder stream as TCP (after a ``Protocol.UDP`` request):
the stream keeps datagram boundaries only if it frames them. Any length from 0 to 65535 is valid,
so a decoder never rejects bytes; a stream that ends inside a datagram is the only error. UDP
payloads are at most 65507 (IPv4) or 65527 (IPv6) bytes, so every real datagram fits.
"""

import asyncio
import struct

from heron_core.errors import HeronError

MAX_DATAGRAM_BYTES = 0xFFFF

_LENGTH = struct.Struct("!H")


class DatagramError(HeronError):
    """A stream of datagrams that ended inside one."""


def encode_datagram(payload: bytes | bytearray | memoryview) -> bytes:
    """``payload`` framed for the stream; raises ValueError over 65535 bytes."""
    if len(payload) > MAX_DATAGRAM_BYTES:
        raise ValueError(f"datagram of {len(payload)} bytes exceeds {MAX_DATAGRAM_BYTES}")
    return _LENGTH.pack(len(payload)) + payload


class DatagramDecoder:
    """Turns stream bytes, cut anywhere, back into the datagrams they frame."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held of a datagram not yet complete (0 at a datagram boundary)."""
        return len(self._buffer)

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        """The datagrams ``data`` completes, in order."""
        self._buffer += data
        datagrams: list[bytes] = []
        at = 0
        while len(self._buffer) - at >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer, at)
            end = at + _LENGTH.size + length
            if end > len(self._buffer):
                break
            datagrams.append(bytes(self._buffer[at + _LENGTH.size : end]))
            at = end
        del self._buffer[:at]  # once per feed: many small datagrams stay linear
        return datagrams


async def read_datagram(reader: asyncio.StreamReader) -> bytes | None:
    """The next datagram, or None when the stream ends cleanly between two."""
    try:
        prefix = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise DatagramError("datagram stream ended inside a length prefix") from exc
    (length,) = _LENGTH.unpack(prefix)
    try:
        return await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise DatagramError(
            f"datagram stream ended after {len(exc.partial)} of a datagram's {length} bytes"
        ) from exc


async def write_datagram(
    writer: asyncio.StreamWriter, payload: bytes | bytearray | memoryview
) -> None:
    """Write one datagram and wait until the stream can take more (back-pressure)."""
    writer.write(encode_datagram(payload))
    await writer.drain()
