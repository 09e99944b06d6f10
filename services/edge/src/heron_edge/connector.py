"""``open_stream``: a connected stream to a target, through the agent of the peer that reaches it.

The edge connects to the agent's forwarder at the peer's overlay address (through the WireGuard
interface), sends the forwarder header naming the target and the client, and waits for the
agent's answer. What comes back is the bare connected socket, ready for ``heron_tunnel.relay``
(L4) or for an HTTP client connection (L7); a refusal becomes a ``TunnelError`` whose status says
whose fault it is (not allowed, refused by the target, unreachable, timed out).
"""

import asyncio
import errno
import math
import socket
from dataclasses import dataclass
from functools import cached_property

from heron_core.errors import HeronError
from heron_tunnel.header import (
    ForwardResponse,
    ForwardStatus,
    HeaderError,
    HeaderTimeoutError,
    Protocol,
    RequestTemplate,
    take_response,
)
from heron_tunnel.sockets import (
    connect,
    delay_acks,
    is_connected,
    request_fast_open,
    wait_connected,
    wait_readable,
)

#: the agent's forwarder port when its peer reports none
DEFAULT_FORWARDER_PORT = 51821
#: reaching the agent across the tunnel; a live tunnel answers in milliseconds
TUNNEL_CONNECT_TIMEOUT_S = 5.0
#: the agent resolves and dials the target before it answers: its own connect timeout, plus slack
ANSWER_TIMEOUT_S = 15.0
#: what a failed connection to the agent says when the header left with the SYN
_UNREACHABLE = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


@dataclass(frozen=True)
class StreamTarget:
    """Where a stream goes: the agent (overlay address, forwarder port) and what it dials."""

    peer_overlay_address: str
    host: str  # the address the agent dials; empty: the peer itself (127.0.0.1)
    port: int
    protocol: Protocol = Protocol.TCP
    forwarder_port: int = DEFAULT_FORWARDER_PORT
    service_id: str = ""

    @cached_property
    def request(self) -> RequestTemplate:
        """The forward request's bytes but the client's, made on the first stream; raises
        ``HeaderError`` for a target the header cannot name."""
        return RequestTemplate(self.protocol, self.host or "127.0.0.1", self.port, self.service_id)


class TunnelError(HeronError):
    """The stream could not be opened; ``status`` says why, ``message`` in words."""

    def __init__(self, status: ForwardStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def open_stream(
    target: StreamTarget,
    client: tuple[str, int],
    *,
    connect_timeout_s: float = TUNNEL_CONNECT_TIMEOUT_S,
    answer_timeout_s: float = ANSWER_TIMEOUT_S,
) -> socket.socket:
    """A non-blocking socket connected to ``target`` through its agent; the caller closes it."""
    loop = asyncio.get_running_loop()
    header = target.request.encode(client[0], client[1])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        delay_acks(sock)  # the handshake's last ACK rides on the header
        address = (target.peer_overlay_address, target.forwarder_port)
        try:
            in_syn = await _connect_and_send(loop, sock, address, header, connect_timeout_s)
        except TimeoutError:
            raise _connect_timeout(target, connect_timeout_s) from None
        except OSError as exc:
            raise _unreachable(target, exc) from None
        try:
            response = await _read_answer(loop, sock, in_syn, connect_timeout_s, answer_timeout_s)
        except _NoHandshakeError:
            raise _connect_timeout(target, connect_timeout_s) from None
        except HeaderError as exc:
            raise TunnelError(exc.status, f"the agent at {_agent(target)}: {exc.message}") from None
        except OSError as exc:
            if exc.errno in _UNREACHABLE:
                raise _unreachable(target, exc) from None
            raise TunnelError(
                ForwardStatus.UNREACHABLE,
                f"the agent at {_agent(target)} dropped the stream: {exc}",
            ) from None
        if not response.ok:
            raise TunnelError(response.status, response.message or response.status.name)
        if in_syn:
            delay_acks(sock)  # connected now: the first bytes' ACKs ride on the answers
    except BaseException:
        sock.close()
        raise
    return sock


async def _connect_and_send(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    address: tuple[str, int],
    header: bytes,
    connect_timeout_s: float,
) -> bool:
    """Connect ``sock`` and send ``header``: True when it left with the SYN (TCP Fast Open)
    and the handshake may still be under way."""
    sent = 0
    if request_fast_open(sock):
        try:
            sock.connect(address)  # returns at once: the SYN waits for the first send
            sent = sock.send(header)
        except BlockingIOError:  # no cookie for this agent yet: a SYN asking for one left
            sent = 0
        if sent == len(header):
            return True
        await wait_connected(loop, sock, connect_timeout_s)
    else:
        await connect(loop, sock, address, connect_timeout_s)
    delay_acks(sock)  # the answer and the first bytes need no ACK of their own
    rest = header[sent:]
    if sock.send(rest) < len(rest):  # an empty send buffer takes it whole
        raise OSError(errno.EIO, "the forward request did not fit in the send buffer")
    return False


class _NoHandshakeError(Exception):
    """The header left with the SYN, and no handshake completed within the connect timeout."""


async def _read_answer(
    loop: asyncio.AbstractEventLoop,
    sock: socket.socket,
    in_syn: bool,
    connect_timeout_s: float,
    answer_timeout_s: float,
) -> ForwardResponse:
    """The agent's answer; when the header left with the SYN, the connect timeout still holds
    for the handshake (the agent may be unreachable: then the answer never comes). One wait
    with one timer, at the earlier of the two deadlines."""
    buf = bytearray()  # the header has just left: no answer can be here yet
    now = loop.time()
    answer_by = now + answer_timeout_s
    handshake_by = now + connect_timeout_s if in_syn else math.inf
    while True:
        deadline = min(answer_by, handshake_by)
        woken = await wait_readable(loop, sock, deadline)
        if (response := take_response(sock, buf)) is not None:
            return response
        if woken:
            continue
        # the timer fired: loops run timers up to a clock tick early, so the deadline is here
        now = max(loop.time(), deadline)
        if now >= handshake_by or (now >= answer_by and in_syn):
            if not is_connected(sock):  # a short answer timeout may run out first
                raise _NoHandshakeError
            handshake_by = math.inf
        if now >= answer_by:
            raise HeaderTimeoutError(
                f"no complete response within {answer_timeout_s:g} s ({len(buf)} bytes received)"
            )


def _connect_timeout(target: StreamTarget, timeout_s: float) -> TunnelError:
    return TunnelError(
        ForwardStatus.CONNECT_TIMEOUT,
        f"the agent at {_agent(target)} did not answer within {timeout_s:g} s "
        "(is the peer's tunnel up?)",
    )


def _unreachable(target: StreamTarget, exc: OSError) -> TunnelError:
    return TunnelError(
        ForwardStatus.UNREACHABLE,
        f"cannot reach the agent at {_agent(target)}: {exc.strerror or exc}",
    )


def _agent(target: StreamTarget) -> str:
    return f"{target.peer_overlay_address}:{target.forwarder_port}"
