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
import os
import socket
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from heron_core.errors import HeronError
from heron_tunnel import deadlines as _deadlines
from heron_tunnel import poller as _poller
from heron_tunnel.header import (
    ForwardStatus,
    HeaderError,
    Protocol,
    RequestTemplate,
    take_response,
)
from heron_tunnel.sockets import (
    CONNECT_IN_PROGRESS,
    delay_acks,
    is_connected,
    request_fast_open,
    start_connect,
)

if TYPE_CHECKING:
    from collections.abc import Callable

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
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def opened(_: StreamOpening) -> None:
        if not done.done():
            done.set_result(None)

    opening = StreamOpening(
        target, client, on_done=opened,
        connect_timeout_s=connect_timeout_s, answer_timeout_s=answer_timeout_s,
    )  # fmt: skip
    try:
        await done
    except BaseException:
        opening.cancel()
        raise
    return opening.take()


#: where an opening stands: its connect (and the header's rest) under way, or its answer awaited
_CONNECTING, _ANSWER = 0, 1


class StreamOpening:
    """Opens a stream from the loop's callbacks, with no task: ``on_done(self)`` once, after
    the constructor has returned, and then ``take()`` gives the connected socket (the agent
    answered OK) or raises the ``TunnelError`` that says why not. ``cancel`` closes what it
    opened, and ``on_done`` is not called.

    With TCP Fast Open the header leaves with the SYN; the connect timeout still holds for the
    handshake (the agent may be unreachable: then the answer never comes). Otherwise the connect
    completes first, the header follows, and the answer timeout starts. One registration with
    the loop's poller, and one coarse deadline (``heron_tunnel.deadlines``) at a time: the
    earlier of the two.
    """

    __slots__ = (
        "_answer_by", "_answer_timeout_s", "_buf", "_client", "_connect_timeout_s", "_deadline",
        "_deadlines", "_error", "_handler", "_handshake_by", "_header", "_in_syn", "_loop",
        "_on_done", "_poller", "_sock", "_state", "_target",
    )  # fmt: skip

    def __init__(
        self,
        target: StreamTarget,
        client: tuple[str, int],
        *,
        on_done: "Callable[[StreamOpening], None]",
        connect_timeout_s: float = TUNNEL_CONNECT_TIMEOUT_S,
        answer_timeout_s: float = ANSWER_TIMEOUT_S,
    ) -> None:
        loop = self._loop = asyncio.get_running_loop()
        self._target = target
        self._client = client
        self._on_done: Callable[[StreamOpening], None] | None = on_done
        self._connect_timeout_s = connect_timeout_s
        self._answer_timeout_s = answer_timeout_s
        self._error: TunnelError | None = None
        self._buf = bytearray()
        self._deadlines = _deadlines.deadlines(loop)
        self._deadline: float | None = None  # the key of the deadline set, while one is
        self._poller: _poller.Poller | None = None
        self._handler: Callable[[int], None] | None = None
        self._in_syn = False
        self._state = _CONNECTING
        self._answer_by = self._handshake_by = math.inf
        self._header = b""
        self._sock: socket.socket | None = None
        try:
            self._header = target.request.encode(client[0], client[1])
        except HeaderError as exc:
            self._fail_soon(TunnelError(exc.status, f"the target cannot be named: {exc.message}"))
            return
        try:
            sock = self._sock = socket.socket(
                socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            delay_acks(sock)  # the handshake's last ACK rides on the header
            self._start(sock, loop.time())
        except OSError as exc:
            self._fail_soon(_unreachable(target, exc))
        except BaseException:
            self.cancel()
            raise

    def take(self) -> socket.socket:
        """The connected socket, now the caller's; or the error that ended the opening."""
        poller = self._poller
        sock, handler = self.take_registered()
        if poller is not None:
            poller.unregister(sock.fileno(), handler)
        return sock

    def take_registered(self) -> "tuple[socket.socket, Callable[[int], None]]":
        """The connected socket, still in the loop's poller under the handler returned with
        it, which now does nothing: for ``heron_tunnel.relay.Relay(b_registered=…)``, which
        takes the registration over (or the caller unregisters it). Raises as ``take``."""
        if self._error is not None:
            raise self._error
        sock, handler = self._sock, self._handler
        if sock is None or handler is None or self._on_done is not None:
            raise RuntimeError("the stream is not open (yet), or was taken")
        self._sock = None
        self._poller = self._handler = None  # a bound method: it would hold this in a cycle
        return sock, handler

    def cancel(self) -> None:
        """Close what was opened; ``on_done`` is not called."""
        self._on_done = None
        self._unwatch()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _start(self, sock: socket.socket, now: float) -> None:
        address = (self._target.peer_overlay_address, self._target.forwarder_port)
        sent = 0
        if request_fast_open(sock):
            try:
                sock.connect(address)  # returns at once: the SYN waits for the first send
                sent = sock.send(self._header)
            except BlockingIOError:  # no cookie for this agent yet: a SYN asking for one left
                sent = 0
            self._header = self._header[sent:]
            if not self._header:
                self._in_syn = True
                self._state = _ANSWER
                self._answer_by = now + self._answer_timeout_s
                self._handshake_by = now + self._connect_timeout_s
        else:
            code = start_connect(sock, address)
            if code == 0:
                self._send_header(sock, now)
            elif code not in CONNECT_IN_PROGRESS:
                raise OSError(code, os.strerror(code))
        self._poller = _poller.poller(self._loop)
        self._handler = self._on_event  # the object ``unregister`` must be given back
        self._poller.register(sock.fileno(), self._handler)
        self._arm(now, now + self._connect_timeout_s if self._state == _CONNECTING else None)

    def _send_header(self, sock: socket.socket, now: float) -> None:
        """Connected: the header (or what the SYN did not carry), and the answer's wait."""
        delay_acks(sock)  # the answer and the first bytes need no ACK of their own
        if sock.send(self._header) < len(self._header):  # an empty send buffer takes it whole
            raise OSError(errno.EIO, "the forward request did not fit in the send buffer")
        self._state = _ANSWER
        self._answer_by = now + self._answer_timeout_s

    def _arm(self, now: float, deadline: float | None = None) -> None:
        if self._deadline is not None:
            self._deadlines.remove(self._deadline, self)
        if deadline is None:
            deadline = min(self._answer_by, self._handshake_by)
        self._deadline = self._deadlines.add(deadline, self, now)

    def _on_event(self, events: int) -> None:
        sock = self._sock
        if sock is None or self._on_done is None:  # over: the socket awaits ``take``
            return
        try:
            if self._state == _CONNECTING:
                if not events & _poller.WRITABLE:
                    return
                if code := sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    raise OSError(code, os.strerror(code))
                if not is_connected(sock):  # an edge that was not this connect's
                    return
                now = self._loop.time()
                self._send_header(sock, now)
                self._arm(now)
            elif events & _poller.READABLE:
                self._read_answer(sock)
        except OSError as exc:
            self._fail(self._lost(exc))

    def _read_answer(self, sock: socket.socket) -> None:
        try:
            response = take_response(sock, self._buf)
        except HeaderError as exc:
            self._fail(
                TunnelError(exc.status, f"the agent at {_agent(self._target)}: {exc.message}")
            )
            return
        if response is None:
            return
        if not response.ok:
            self._fail(TunnelError(response.status, response.message or response.status.name))
            return
        if self._in_syn:
            delay_acks(sock)  # connected now: the first bytes' ACKs ride on the answers
        self._finish()

    def expired(self, now: float) -> None:
        """The earlier deadline has come (``heron_tunnel.deadlines.Expiring``)."""
        self._deadline = None
        sock = self._sock
        if sock is None:
            return
        if self._state == _CONNECTING:
            self._fail(_connect_timeout(self._target, self._connect_timeout_s))
            return
        try:
            self._read_answer(sock)  # what an edge may not have said yet
        except OSError as exc:
            self._fail(self._lost(exc))
            return
        if self._sock is None or self._on_done is None:
            return
        if now >= self._handshake_by or (now >= self._answer_by and self._in_syn):
            if not is_connected(sock):  # a short answer timeout may run out first
                self._fail(_connect_timeout(self._target, self._connect_timeout_s))
                return
            self._handshake_by = math.inf
        if now >= self._answer_by:
            self._fail(
                TunnelError(
                    ForwardStatus.BAD_HEADER,
                    f"the agent at {_agent(self._target)}: no complete response within "
                    f"{self._answer_timeout_s:g} s ({len(self._buf)} bytes received)",
                )
            )
            return
        self._arm(now)

    def _lost(self, exc: OSError) -> TunnelError:
        if self._state == _CONNECTING or exc.errno in _UNREACHABLE:
            return _unreachable(self._target, exc)
        return TunnelError(
            ForwardStatus.UNREACHABLE,
            f"the agent at {_agent(self._target)} dropped the stream: {exc}",
        )

    def _unwatch(self) -> None:
        self._forget_deadline()
        if self._sock is not None:
            self._unregister(self._sock)

    def _forget_deadline(self) -> None:
        if self._deadline is not None:
            self._deadlines.remove(self._deadline, self)
            self._deadline = None

    def _unregister(self, sock: socket.socket) -> None:
        if self._poller is not None and self._handler is not None:
            self._poller.unregister(sock.fileno(), self._handler)
        self._poller = None
        self._handler = None  # a bound method: it would hold this opening in a cycle

    def _finish(self) -> None:
        """``on_done`` (once); an open socket stays registered until it is taken."""
        self._forget_deadline()
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)

    def _fail(self, error: TunnelError) -> None:
        self._error = error
        self._unwatch()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._finish()

    def _fail_soon(self, error: TunnelError) -> None:
        """A failure found in the constructor: ``on_done`` only once it has returned."""
        self._unwatch()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._error = error
        self._loop.call_soon(self._finish)


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
