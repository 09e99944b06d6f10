"""The forwarder header: what an edge asks an agent to dial, and the agent's answer (a wire **contract**).

Over WireGuard the edge opens a TCP stream to the agent's forwarder port and sends one request
header; the agent checks the target, dials it and answers with one response header; after that
the stream carries raw bytes (or framed datagrams, see ``datagrams``). Big-endian::

    request   "HRN"  version u8 (=1)  body_len u16 (<= 512)  body
      body    protocol u8 (1 tcp, 2 udp)  target address  target port u16 (1-65535)
              client address (IPv4/IPv6 only)  client port u16  service id (u8 len 0-64, [A-Za-z0-9_-])
      address atype u8: 1 IPv4 (4 bytes) | 2 IPv6 (16 bytes) | 3 domain (u8 len 1-253, ASCII)
    response  "HRN"  version u8  status u8  message (u8 len, UTF-8)

Parsers are incremental and fail as early as the bytes allow (bad magic at the first differing
byte, an unknown version at the fourth), so a stray HTTP request or a port scanner is turned away
at once. The readers take exactly the header's bytes off the stream: what follows belongs to the
relay. A ``ForwardRequest`` validates its values when built (the rules live in ``_fields``), so
whatever constructs also encodes, and a decoded request re-encodes to the bytes it came from
(domain names lower-cased).
"""

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import IntEnum

from heron_core.errors import HeronError
from heron_tunnel import _fields
from heron_tunnel.sockets import wait_readable

Buffer = bytes | bytearray | memoryview

MAGIC = b"HRN"
VERSION = 1
#: the largest valid version-1 body is 342 bytes; the margin leaves version 1 room to grow
MAX_BODY_BYTES = 512
#: a response message is a one-line diagnostic for the edge's log
MAX_MESSAGE_BYTES = 255

_REQUEST_PREFIX = struct.Struct("!3sBH")  # magic, version, body_len
_RESPONSE_PREFIX = struct.Struct("!3sBBB")  # magic, version, status, message length


class Protocol(IntEnum):
    """What the agent dials: a TCP connection, or a UDP socket fed with framed datagrams."""

    TCP = 1
    UDP = 2


class ForwardStatus(IntEnum):
    """The agent's answer; after anything but ``OK`` the agent closes the stream."""

    OK = 0
    BAD_HEADER = 1
    UNSUPPORTED_VERSION = 2
    TARGET_NOT_ALLOWED = 3
    CONNECTION_REFUSED = 4
    CONNECT_TIMEOUT = 5
    UNREACHABLE = 6  # no route to the target, or its name does not resolve
    INTERNAL = 7


class HeaderError(HeronError):
    """A header that is malformed, unsupported or invalid; ``status`` is what the agent answers."""

    def __init__(self, status: ForwardStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def response(self) -> "ForwardResponse":
        """The response that tells the other side what was wrong."""
        return ForwardResponse(self.status, self.message)


class HeaderTimeoutError(HeaderError):
    """The whole header did not arrive in time."""

    def __init__(self, message: str) -> None:
        super().__init__(ForwardStatus.BAD_HEADER, message)


_PROTOCOLS = frozenset(Protocol)
_STATUSES = frozenset(ForwardStatus)
_PROTOCOL_OF = {int(p): p for p in Protocol}
#: the usual request body, both addresses IPv4: protocol, target (type, address, port), client
#: (type, address, port), service id length; the service id follows
_IPV4_BODY = struct.Struct("!BB4sHB4sHB")
_IPV4 = int(_fields.AddressType.IPV4)
#: what every request of this version starts with, its body's length after it
_REQUEST_START = MAGIC + bytes((VERSION,))


@dataclass(frozen=True)
class ForwardRequest:
    """What the edge asks the agent to dial, and for whom; raises ``HeaderError`` if invalid."""

    protocol: Protocol
    target_host: str  # an IP address or a domain name; normalised (canonical IP text, lower case)
    target_port: int
    client_ip: str
    client_port: int
    service_id: str = ""  # for the agent's log line only

    def __post_init__(self) -> None:
        with _bad_header():
            object.__setattr__(self, "protocol", Protocol(self.protocol))
            object.__setattr__(self, "target_host", _fields.normalise_target(self.target_host))
            object.__setattr__(
                self, "client_ip", _fields.normalise_ip(self.client_ip, "client address")
            )
            _fields.check_port("target port", self.target_port, low=1)
            _fields.check_port("client port", self.client_port, low=0)
            _fields.check_service_id(self.service_id)

    @classmethod
    def _decoded(
        cls, protocol: Protocol, target_host: str, target_port: int, client_ip: str,
        client_port: int, service_id: str,
    ) -> "ForwardRequest":  # fmt: skip
        """A request of fields a decoder has already checked and normalised: no second pass."""
        request = object.__new__(cls)
        request.__dict__.update(
            protocol=protocol, target_host=target_host, target_port=target_port,
            client_ip=client_ip, client_port=client_port, service_id=service_id,
        )  # fmt: skip
        return request


@dataclass(frozen=True)
class ForwardResponse:
    status: ForwardStatus
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.status is ForwardStatus.OK


def encode_request(request: ForwardRequest) -> bytes:
    body = b"".join(
        (
            bytes((request.protocol,)),
            _fields.encode_address(request.target_host),
            _fields.encode_port(request.target_port),
            _fields.encode_address(request.client_ip),
            _fields.encode_port(request.client_port),
            _fields.encode_short_string(request.service_id),
        )
    )
    return _REQUEST_PREFIX.pack(MAGIC, VERSION, len(body)) + body


#: the client address a template is checked with (each stream's replaces it)
_ANY_CLIENT = "192.0.2.1"


class RequestTemplate:
    """Every request for one target, but for the client's address: checked and encoded once,
    since an edge sends it on every stream to that target."""

    __slots__ = ("_head", "_protocol", "_service_id", "_tail", "_target_host", "_target_port")

    def __init__(
        self, protocol: Protocol, target_host: str, target_port: int, service_id: str = ""
    ) -> None:
        checked = ForwardRequest(protocol, target_host, target_port, _ANY_CLIENT, 0, service_id)
        self._protocol = checked.protocol
        self._target_host = checked.target_host
        self._target_port = checked.target_port
        self._service_id = checked.service_id
        self._head = (
            bytes((checked.protocol,))
            + _fields.encode_address(checked.target_host)
            + _fields.encode_port(checked.target_port)
        )
        self._tail = _fields.encode_short_string(checked.service_id)

    def encode(self, client_ip: str, client_port: int) -> bytes:
        """``encode_request`` of the request for the client at ``client_ip``:``client_port``."""
        client = _fields.encode_canonical_ipv4(client_ip)
        if client is None or not 0 <= client_port <= _fields.MAX_PORT:  # IPv6, or to refuse
            request = ForwardRequest(
                self._protocol, self._target_host, self._target_port,
                client_ip, client_port, self._service_id,
            )  # fmt: skip
            return encode_request(request)
        body = self._head + client + _fields.encode_port(client_port) + self._tail
        return _REQUEST_PREFIX.pack(MAGIC, VERSION, len(body)) + body


def encode_response(response: ForwardResponse) -> bytes:
    """Encode ``response``; a message over 255 bytes is cut after the last whole character that fits."""
    raw = response.message.encode("utf-8", errors="replace")[:MAX_MESSAGE_BYTES]
    message = raw.decode("utf-8", errors="ignore").encode("utf-8")  # drops a character cut in two
    return _RESPONSE_PREFIX.pack(MAGIC, VERSION, response.status, len(message)) + message


def parse_request(buf: Buffer) -> tuple[ForwardRequest, int] | None:
    """The request at the start of ``buf`` and its length in bytes, or None while it is incomplete.

    Raises ``HeaderError`` as soon as the bytes seen cannot start a valid request.
    """
    size = _request_size(buf)
    return None if len(buf) < size else (_decode_request(bytes(buf[:size])), size)


def parse_response(buf: Buffer) -> tuple[ForwardResponse, int] | None:
    """The response at the start of ``buf`` and its length in bytes, or None while it is incomplete."""
    size = _response_size(buf)
    return None if len(buf) < size else (_decode_response(bytes(buf[:size])), size)


async def read_request(reader: asyncio.StreamReader, timeout_s: float) -> ForwardRequest:
    """Read one request off ``reader``, leaving whatever follows it in the reader."""
    return _decode_request(await _read(reader.read, _request_size, timeout_s, "forward request"))


async def read_response(reader: asyncio.StreamReader, timeout_s: float) -> ForwardResponse:
    """Read one response off ``reader``, leaving whatever follows it in the reader."""
    return _decode_response(await _read(reader.read, _response_size, timeout_s, "response"))


async def read_request_from_socket(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    timeout_s: float,
    buf: bytearray | None = None,
) -> ForwardRequest:
    """Read one request off a non-blocking socket, taking no byte past it (then ``relay`` it);
    ``buf``: what ``take_request`` took of it already."""
    return _decode_request(
        await _read_socket(loop, sock, _request_size, timeout_s, "forward request", buf)
    )


def take_request(sock: socket.socket, buf: bytearray) -> ForwardRequest | None:
    """Receive into ``buf`` what the non-blocking ``sock`` holds of a request, taking no byte
    past it: the request once it is whole, None while the socket has no more for now."""
    if not buf:  # the usual case, a whole request there: one read for its prefix, one for the rest
        try:
            head = sock.recv(_REQUEST_PREFIX.size)
        except (BlockingIOError, InterruptedError):
            return None
        buf += head
        if len(head) == _REQUEST_PREFIX.size and head.startswith(_REQUEST_START):
            body_len = int.from_bytes(head[len(_REQUEST_START) :], "big")
            if body_len <= MAX_BODY_BYTES:
                try:
                    body = sock.recv(body_len)
                except (BlockingIOError, InterruptedError):
                    return None
                buf += body
                if len(body) == body_len:
                    return _decode_request(head + body)
    if not _take(sock, buf, _request_size, "forward request"):
        return None
    return _decode_request(bytes(buf))


async def read_response_from_socket(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, timeout_s: float
) -> ForwardResponse:
    """Read one response off a non-blocking socket, taking no byte past it."""
    return _decode_response(await _read_socket(loop, sock, _response_size, timeout_s, "response"))


def _request_size(buf: Buffer) -> int:
    """The request's total length, as far as its first bytes tell (the prefix's, until then)."""
    _check_prefix(buf, "forward request")
    if len(buf) < _REQUEST_PREFIX.size:
        return _REQUEST_PREFIX.size
    body_len = int.from_bytes(buf[4:6], "big")
    if body_len > MAX_BODY_BYTES:
        raise HeaderError(
            ForwardStatus.BAD_HEADER,
            f"forward request body of {body_len} bytes exceeds {MAX_BODY_BYTES}",
        )
    return _REQUEST_PREFIX.size + body_len


def _response_size(buf: Buffer) -> int:
    _check_prefix(buf, "response")
    if len(buf) < _RESPONSE_PREFIX.size:
        return _RESPONSE_PREFIX.size
    return _RESPONSE_PREFIX.size + buf[5]


def _check_prefix(buf: Buffer, what: str) -> None:
    seen = bytes(buf[: len(MAGIC)])
    if seen != MAGIC[: len(seen)]:
        raise HeaderError(ForwardStatus.BAD_HEADER, f"{what} does not start with {MAGIC!r}")
    if len(buf) > len(MAGIC) and (version := buf[len(MAGIC)]) != VERSION:
        raise HeaderError(
            ForwardStatus.UNSUPPORTED_VERSION,
            f"{what} version {version} is not supported (this side speaks {VERSION})",
        )


def _decode_request(buf: bytes) -> ForwardRequest:
    if (fast := _decode_ipv4_request(buf)) is not None:
        return fast
    return _decode_any_request(buf)


def _decode_any_request(buf: bytes) -> ForwardRequest:
    cursor = _fields.Cursor(buf[_REQUEST_PREFIX.size :])
    with _bad_header():
        protocol = cursor.u8("protocol")
        if protocol not in _PROTOCOLS:
            raise ValueError(f"unknown protocol {protocol}")
        target = cursor.address("target address", allow_domain=True)
        target_port = cursor.u16("target port")
        client = cursor.address("client address", allow_domain=False)
        client_port = cursor.u16("client port")
        service_id = cursor.short_string("service id")
        cursor.finish()
    return ForwardRequest(Protocol(protocol), target, target_port, client, client_port, service_id)


def _decode_ipv4_request(buf: bytes) -> ForwardRequest | None:
    """The usual request (both addresses IPv4), decoded in one unpack; None for anything else,
    valid or not, which the general decoder takes (with its error messages)."""
    at = _REQUEST_PREFIX.size
    if len(buf) < at + _IPV4_BODY.size or buf[at + 1] != _IPV4 or buf[at + 8] != _IPV4:
        return None
    protocol, _, target, target_port, _, client, client_port, id_len = _IPV4_BODY.unpack_from(
        buf, at
    )
    service_id = buf[at + _IPV4_BODY.size :]
    if (
        protocol not in _PROTOCOL_OF
        or not target_port
        or len(service_id) != id_len
        or not _fields.is_service_id(service_id)
    ):
        return None
    return ForwardRequest._decoded(
        _PROTOCOL_OF[protocol], socket.inet_ntoa(target), target_port,
        socket.inet_ntoa(client), client_port, service_id.decode("ascii"),
    )  # fmt: skip


def _decode_response(buf: bytes) -> ForwardResponse:
    status = buf[4]
    if status not in _STATUSES:
        raise HeaderError(ForwardStatus.BAD_HEADER, f"unknown response status {status}")
    try:
        message = buf[_RESPONSE_PREFIX.size :].decode("utf-8")
    except UnicodeDecodeError:
        raise HeaderError(ForwardStatus.BAD_HEADER, "response message is not UTF-8") from None
    return ForwardResponse(ForwardStatus(status), message)


@contextmanager
def _bad_header() -> Iterator[None]:
    """A field that breaks its rule (``_fields`` raises ValueError) makes the header bad."""
    try:
        yield
    except ValueError as exc:
        raise HeaderError(ForwardStatus.BAD_HEADER, str(exc)) from exc


async def _read(
    receive: Callable[[int], Awaitable[bytes]],
    size_of: Callable[[Buffer], int],
    timeout_s: float,
    what: str,
    buf: bytearray | None = None,
) -> bytes:
    """Receive exactly one header (``buf``: its start, already received): never ask for more
    bytes than it still lacks."""
    buf = bytearray() if buf is None else buf
    try:
        async with asyncio.timeout(timeout_s):
            while (missing := size_of(buf) - len(buf)) > 0:
                chunk = await receive(missing)
                if not chunk:
                    raise HeaderError(
                        ForwardStatus.BAD_HEADER,
                        f"{what} truncated: the stream ended after {len(buf)} bytes",
                    )
                buf += chunk
    except TimeoutError:
        raise HeaderTimeoutError(
            f"no complete {what} within {timeout_s:g} s ({len(buf)} bytes received)"
        ) from None
    return bytes(buf)


async def _read_socket(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    size_of: Callable[[Buffer], int],
    timeout_s: float,
    what: str,
    buf: bytearray | None = None,
) -> bytes:
    """Read one header off a non-blocking socket, taking first what is already there without
    waiting: a header usually arrives in one segment, often before its reader asks (no loop
    turn, no timer). ``buf``: its start, taken already."""
    buf = bytearray() if buf is None else buf
    deadline: float | None = None
    while not _take(sock, buf, size_of, what):
        if deadline is None:
            deadline = loop.time() + timeout_s
        if not await wait_readable(loop, sock, deadline) and not _take(sock, buf, size_of, what):
            raise HeaderTimeoutError(
                f"no complete {what} within {timeout_s:g} s ({len(buf)} bytes received)"
            )
    return bytes(buf)


def take_response(sock: socket.socket, buf: bytearray) -> ForwardResponse | None:
    """Receive into ``buf`` what the non-blocking ``sock`` holds of a response, taking no byte
    past it: the response once it is whole, None while the socket has no more for now."""
    if not _take(sock, buf, _response_size, "response"):
        return None
    return _decode_response(bytes(buf))


def _take(sock: socket.socket, buf: bytearray, size_of: Callable[[Buffer], int], what: str) -> bool:
    """Receive what is there of one header into ``buf``: True once it is whole."""
    while (missing := size_of(buf) - len(buf)) > 0:
        try:
            chunk = sock.recv(missing)
        except (BlockingIOError, InterruptedError):
            return False
        if not chunk:
            raise HeaderError(
                ForwardStatus.BAD_HEADER,
                f"{what} truncated: the stream ended after {len(buf)} bytes",
            )
        buf += chunk
    return True
