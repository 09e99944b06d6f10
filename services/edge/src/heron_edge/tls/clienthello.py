"""``parse_client_hello``: the SNI and ALPN of a TLS ClientHello, sans-IO, from any prefix of it.

The edge's TLS port routes by the ClientHello before anything consumes a byte: ``peek`` hands
this module the bytes queued so far, and gets one of

    ClientHello   ``server_name``, ``alpn``, and ``size``: the bytes of the records it spans
    NeedMore      ``at_least``: the total to wait for (the next record header, or the rest of
                  the current record), then ask again with all the bytes from the start
    NOT_TLS       the first byte is no TLS record: plain HTTP on the TLS port, say, which the
                  caller may answer in plain HTTP
    raises MalformedClientHelloError   TLS, but broken, or larger than ``max_size``

Every prefix of a valid hello gives ``NeedMore``, and no input makes anything else escape. A
handshake message may span records and records may split it anywhere, even inside its 4-byte
header (RFC 8446 §5.1); clients with post-quantum key shares send hellos of several KiB. What
follows the hello (in its last record, or after it: early data, say) is not looked at.

SSLv2-compatible hellos (RFC 5246 appendix E.2: first byte with the high bit set) are NOT_TLS:
they cannot carry extensions, so there is no name to route by, and no server behind us takes them.
A first byte that is another TLS content type (alert, application data, ...) is malformed.

Hot path: one pass over the bytes. Each record's fragment is copied once into ``bytes`` and the
body is read by offsets into it; no memoryview outlives the expression that slices it, so a
caller's ``bytearray`` is never left exported (and unresizable) by a view an exception's
traceback holds.
"""

import re
from dataclasses import dataclass
from enum import Enum
from typing import Final

from heron_core.errors import HeronError

Buffer = bytes | bytearray | memoryview

RECORD_HEADER_BYTES: Final = 5  # content type u8, legacy_record_version u16, length u16
#: RFC 8446 §5.1: a record's fragment is at most 2^14 bytes
MAX_RECORD_PAYLOAD_BYTES: Final = 1 << 14
#: one full record of handshake data and the headers of up to four records carrying it; the
#: largest hellos seen (hybrid ML-KEM key shares) are under 2 KiB, so this is generous
MAX_CLIENT_HELLO_BYTES: Final = MAX_RECORD_PAYLOAD_BYTES + RECORD_HEADER_BYTES * 4

_HANDSHAKE: Final = 22
_OTHER_RECORD_TYPES: Final = {
    20: "change_cipher_spec",
    21: "alert",
    23: "application_data",
    24: "heartbeat",
}
_CLIENT_HELLO: Final = 1
_HANDSHAKE_HEADER_BYTES: Final = 4  # msg_type u8, length u24
_RANDOM_BYTES: Final = 32
_MAX_SESSION_ID_BYTES: Final = 32
_EXT_SERVER_NAME: Final = 0  # RFC 6066 §3
_EXT_ALPN: Final = 16  # RFC 7301 §3.1
_NAME_TYPE_HOST_NAME: Final = 0
_MAX_HOST_NAME_BYTES: Final = 255
#: labels of letters, digits, hyphens (and underscores, which real names carry), 1-63 bytes each,
#: dot-separated, optionally one trailing dot; linear-time: a dot must separate the repetitions
_HOST_NAME: Final = re.compile(rb"(?:[A-Za-z0-9_-]{1,63}\.)*[A-Za-z0-9_-]{1,63}\.?")


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What the router needs from a ClientHello."""

    server_name: str | None  # SNI host_name, lower case, no trailing dot; None when not sent
    alpn: tuple[str, ...]  # ALPN protocol names in the client's order (latin-1); () when not sent
    size: int  # bytes of the TLS records that carried the whole ClientHello, headers included


@dataclass(frozen=True, slots=True)
class NeedMore:
    """Parsing can go on once ``at_least`` bytes (counted from the first) are there."""

    at_least: int


class NotTls(Enum):
    """The bytes do not start a TLS record; use the singleton ``NOT_TLS``."""

    NOT_TLS = "not TLS"


NOT_TLS: Final = NotTls.NOT_TLS


class MalformedClientHelloError(HeronError, ValueError):
    """The bytes are TLS but no acceptable ClientHello: broken, oversized, or not a hello."""


def parse_client_hello(
    data: Buffer, *, max_size: int = MAX_CLIENT_HELLO_BYTES
) -> ClientHello | NeedMore | NotTls:
    """Parse the ClientHello at the start of ``data`` (all the bytes received so far).

    ``max_size`` bounds ``ClientHello.size``: a hello that needs more raises as soon as its
    handshake header says so, and ``NeedMore.at_least`` never exceeds it.
    """
    available = len(data)
    if available and data[0] != _HANDSHAKE:
        if (name := _OTHER_RECORD_TYPES.get(data[0])) is not None:
            raise MalformedClientHelloError(f"a TLS {name} record where a ClientHello belongs")
        return NOT_TLS
    fragments: list[bytes] = []
    collected = 0  # handshake bytes in the complete records so far
    message_end = -1  # handshake bytes of the hello (header included), once its header is in
    position = 0
    while True:
        payload_start = position + RECORD_HEADER_BYTES
        if available < payload_start:
            _check_partial_header(data, position, available)
            return _need(payload_start, max_size)
        length = _record_length(data, position)
        record_end = payload_start + length
        if message_end < 0:
            head_end = min(record_end, available, payload_start + _HANDSHAKE_HEADER_BYTES)
            message_end = _message_end(fragments, bytes(data[payload_start:head_end]))
        if message_end >= 0:
            _check_size(message_end - collected - length, record_end, max_size)
        if available < record_end:
            return _need(record_end, max_size)
        fragment = bytes(data[payload_start:record_end])
        fragments.append(fragment)
        collected += length
        if 0 <= message_end <= collected:
            hello = fragment if len(fragments) == 1 else b"".join(fragments)
            return _parse_hello(hello, message_end, record_end)
        position = record_end


def _need(total: int, max_size: int) -> NeedMore:
    if total > max_size:
        raise MalformedClientHelloError(f"ClientHello larger than {max_size} bytes")
    return NeedMore(total)


def _check_size(missing: int, record_end: int, max_size: int) -> None:
    """Refuse early a hello that cannot fit: ``missing`` handshake bytes still to come after
    the record that ends at ``record_end`` need at least one more record header."""
    least = record_end + (RECORD_HEADER_BYTES + missing if missing > 0 else 0)
    if least > max_size:
        raise MalformedClientHelloError(f"ClientHello larger than {max_size} bytes")


def _check_partial_header(data: Buffer, position: int, available: int) -> None:
    """Fail on a record header's first bytes as soon as they cannot be one of ours."""
    if position < available:
        _check_content_type(data[position])
    if position + 1 < available and data[position + 1] != 3:
        raise MalformedClientHelloError(
            f"record version {data[position + 1]}.x is not TLS (3.x expected)"
        )
    if position + 2 < available and data[position + 2] > 4:
        raise MalformedClientHelloError(f"record version 3.{data[position + 2]} is unknown")


def _record_length(data: Buffer, position: int) -> int:
    """The length of the complete record header at ``position``, which is checked."""
    _check_partial_header(data, position, position + 3)
    length = (data[position + 3] << 8) | data[position + 4]
    if length == 0:  # RFC 8446 §5.1: no zero-length handshake fragments
        raise MalformedClientHelloError("empty handshake record")
    if length > MAX_RECORD_PAYLOAD_BYTES:
        raise MalformedClientHelloError(
            f"record of {length} bytes exceeds {MAX_RECORD_PAYLOAD_BYTES}"
        )
    return length


def _check_content_type(content_type: int) -> None:
    if content_type != _HANDSHAKE:
        name = _OTHER_RECORD_TYPES.get(content_type, f"type {content_type}")
        raise MalformedClientHelloError(f"{name} record inside the ClientHello")


def _message_end(fragments: list[bytes], visible: bytes) -> int:
    """The hello's handshake length (header included) once its header is in view, else -1.

    Checks the message type as soon as its byte is there. Runs only until the length is known:
    once in the usual case, where the first record holds the whole header.
    """
    head = (b"".join(fragments) + visible)[:_HANDSHAKE_HEADER_BYTES]
    if head and head[0] != _CLIENT_HELLO:
        raise MalformedClientHelloError(f"handshake message type {head[0]} is not a ClientHello")
    if len(head) < _HANDSHAKE_HEADER_BYTES:
        return -1
    return _HANDSHAKE_HEADER_BYTES + int.from_bytes(head[1:], "big")


def _parse_hello(hello: bytes, message_end: int, size: int) -> ClientHello:
    """Read the ClientHello body (RFC 8446 §4.1.2) out of ``hello[4:message_end]``."""
    body = _Cursor(hello, _HANDSHAKE_HEADER_BYTES, message_end)
    if (version := body.u16("legacy_version")) >> 8 != 3:
        raise MalformedClientHelloError(f"ClientHello version 0x{version:04x} is not TLS")
    body.skip(_RANDOM_BYTES, "random")
    body.vector(1, "legacy_session_id", high=_MAX_SESSION_ID_BYTES)
    if body.vector(2, "cipher_suites", low=2).remaining % 2:
        raise MalformedClientHelloError("cipher_suites of odd length")
    body.vector(1, "legacy_compression_methods", low=1)
    if not body.remaining:  # extensions are optional before TLS 1.3 (RFC 5246 §7.4.1.2)
        return ClientHello(None, (), size)
    extensions = body.vector(2, "extensions")
    body.expect_end("extensions")
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    seen: set[int] = set()
    while extensions.remaining:
        extension_type = extensions.u16("extension type")
        extension = extensions.vector(2, "extension_data")
        if extension_type in seen:  # RFC 8446 §4.2
            raise MalformedClientHelloError(f"extension {extension_type} sent twice")
        seen.add(extension_type)
        if extension_type == _EXT_SERVER_NAME:
            server_name = _server_name(extension)
        elif extension_type == _EXT_ALPN:
            alpn = _alpn(extension)
    return ClientHello(server_name, alpn, size)


def _server_name(extension: "_Cursor") -> str | None:
    """The host_name entry of a server_name extension (RFC 6066 §3), if it has one."""
    names = extension.vector(2, "server_name_list", low=1)
    extension.expect_end("server_name_list")
    host: str | None = None
    while names.remaining:
        name_type = names.u8("name_type")
        name = names.vector(2, "server name", low=1).rest()
        if name_type != _NAME_TYPE_HOST_NAME:
            continue  # none other is defined; RFC 6066 gives them all this shape
        if host is not None:
            raise MalformedClientHelloError("server_name_list holds two host names")
        host = _host_name(name)
    return host


def _host_name(raw: bytes) -> str:
    if len(raw) > _MAX_HOST_NAME_BYTES:
        raise MalformedClientHelloError(
            f"server name of {len(raw)} bytes exceeds {_MAX_HOST_NAME_BYTES}"
        )
    if _HOST_NAME.fullmatch(raw) is None:
        raise MalformedClientHelloError(f"server name {raw[:64]!r} is not a DNS host name")
    return raw.decode("ascii").lower().removesuffix(".")


def _alpn(extension: "_Cursor") -> tuple[str, ...]:
    """The protocol names of an ALPN extension (RFC 7301 §3.1), as latin-1 (byte for char)."""
    protocols = extension.vector(2, "protocol_name_list", low=2)
    extension.expect_end("protocol_name_list")
    names: list[str] = []
    while protocols.remaining:
        names.append(protocols.vector(1, "protocol name", low=1).rest().decode("latin-1"))
    return tuple(names)


class _Cursor:
    """Bounds-checked reads of ``buf[position:end]``; a vector is a cursor on the same bytes."""

    __slots__ = ("_buf", "_end", "_position")

    def __init__(self, buf: bytes, position: int, end: int) -> None:
        self._buf = buf
        self._position = position
        self._end = end

    @property
    def remaining(self) -> int:
        return self._end - self._position

    def u8(self, what: str) -> int:
        self._require(1, what)
        self._position += 1
        return self._buf[self._position - 1]

    def u16(self, what: str) -> int:
        self._require(2, what)
        self._position += 2
        return (self._buf[self._position - 2] << 8) | self._buf[self._position - 1]

    def skip(self, count: int, what: str) -> None:
        self._require(count, what)
        self._position += count

    def vector(
        self, length_bytes: int, what: str, *, low: int = 0, high: int = 0xFFFF
    ) -> "_Cursor":
        """The vector with a ``length_bytes`` (1 or 2) length prefix at the cursor (RFC 8446 §3.4)."""
        length = self.u8(what) if length_bytes == 1 else self.u16(what)
        if not low <= length <= high:
            raise MalformedClientHelloError(f"{what} of {length} bytes (allowed: {low}-{high})")
        start = self._position
        self.skip(length, what)
        return _Cursor(self._buf, start, self._position)

    def rest(self) -> bytes:
        return self._buf[self._position : self._end]

    def expect_end(self, what: str) -> None:
        if self._position != self._end:
            raise MalformedClientHelloError(
                f"{self._end - self._position} stray bytes after {what}"
            )

    def _require(self, count: int, what: str) -> None:
        if self._position + count > self._end:
            raise MalformedClientHelloError(f"ClientHello truncated in {what}")
