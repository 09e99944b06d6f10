"""The forwarder: edges open a stream over the tunnel, name a target, and the agent dials it.

Each accepted stream starts with a forwarder header (``heron_tunnel.header``). The agent checks
the target against what management allows this peer, dials it (TCP, or a connected UDP socket
whose datagrams ride the stream framed), answers ``OK`` or a typed error, and then relays bytes
both ways until either side is done or the stream sits idle. One log line per stream says who
asked for what, how it ended and how many bytes moved.

The listening socket is a plain non-blocking socket, not an asyncio transport: the header is read
with exact-length reads so that no payload byte is taken from the socket before ``relay`` (which
splices socket to socket) owns it.

Most streams are served whole in the accept callback: the listener hands a connection over once
its header is in, the target is an allowed IP address, and a connect to the peer itself (or a
near LAN host) completes within the call — so the answer goes out and a ``Relay`` starts from the
callback, with no task or coroutine for the stream's life. Anything else (a header in pieces, a
name to resolve, a connect under way, a refusal, UDP) goes on in a task from where it stands.
"""

import asyncio
import contextlib
import errno
import socket
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from heron_agent.allowed import AllowedTargets
from heron_core.logging import LineLogger
from heron_core.tasks import spawn
from heron_tunnel.datagrams import DatagramDecoder, encode_datagram
from heron_tunnel.header import (
    ForwardRequest,
    ForwardResponse,
    ForwardStatus,
    HeaderError,
    Protocol,
    encode_response,
    read_request_from_socket,
    take_request,
)
from heron_tunnel.relay import Relay, RelayStats, relay
from heron_tunnel.sockets import accept_fast_open, settle_connect, start_connect

log = structlog.get_logger(__name__)

#: the forwarder's TCP port on the overlay address, unless configured otherwise
DEFAULT_PORT = 51821
_UNREACHABLE_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL})
_MAX_DATAGRAM = 0xFFFF
#: after a refusal: how long, and how many bytes, to read and drop before closing
_LINGER_S = 1.0
_LINGER_BYTES = 256 * 1024
#: connections taken off the listening socket per wake-up
_ACCEPT_BATCH = 64
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: hand a connection to the forwarder only once its first bytes (the header) are in: one wake-up
#: for both; an edge that sends nothing is accepted after about this long anyway
_DEFER_ACCEPT_S = 1
#: how often ``close`` looks whether the streams relayed from callbacks have ended
_CLOSE_POLL_S = 0.05


@dataclass(frozen=True)
class ForwarderLimits:
    #: the whole header must arrive within this long after the edge connects
    header_timeout_s: float = 5.0
    #: resolving and connecting to the target, together
    connect_timeout_s: float = 10.0
    #: a TCP stream with no byte either way for this long is closed
    idle_timeout_s: float = 3600.0
    #: a UDP session's safety net; the edge closes sessions after the service's own idle timeout
    udp_idle_timeout_s: float = 600.0
    #: streams at once; more are answered INTERNAL and closed
    max_streams: int = 4096
    #: let edges send a stream's header with its SYN (TCP Fast Open, with cookies); turns on the
    #: listener bit of net.ipv4.tcp_fastopen when it is off
    fast_open: bool = False


class _DialError(Exception):
    def __init__(self, status: ForwardStatus, message: str) -> None:
        super().__init__(message)
        self.response = ForwardResponse(status, message)


class Forwarder:
    """Serves edges' streams on one address until ``close``."""

    def __init__(self, allowed: AllowedTargets, limits: ForwarderLimits | None = None) -> None:
        self._allowed = allowed
        self._limits = limits or ForwarderLimits()
        self._listener: socket.socket | None = None
        self._accepting = False
        #: streams served by a task: waiting for a header, a name lookup, a connect, UDP
        self._streams: set[asyncio.Task[None]] = set()
        #: TCP streams relayed from callbacks, without a task (the common case)
        self._relays: set[Relay] = set()
        self._cutting = False  # ``close`` is ending the relays left after the grace
        self._lines = LineLogger(__name__)

    @property
    def address(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("the forwarder is not listening")
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def active_streams(self) -> int:
        return len(self._streams) + len(self._relays)

    async def start(self, host: str, port: int = DEFAULT_PORT) -> None:
        """Listen on ``host:port`` (the overlay address) and accept in the background."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, _DEFER_ACCEPT_S)
            # streams inherit it: a relay adds no Nagle wait (a small write held back until the
            # edge acknowledges the last one, which the edge may delay: 40 ms stalls)
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            listener.bind((host, port))
            listener.listen(1024)
            listener.settimeout(0.0)  # non-blocking
        except OSError as exc:
            listener.close()
            raise OSError(
                exc.errno, f"the forwarder cannot listen on {host}:{port}: {exc}"
            ) from exc
        why_not = (
            accept_fast_open(listener, enable_in_kernel=True) if self._limits.fast_open else None
        )
        if why_not is not None:
            log.info("forwarder without TCP Fast Open", reason=why_not)
        self._listener = listener
        self._lines = LineLogger(__name__)  # logging is configured by now
        self._accepting = True
        asyncio.get_running_loop().add_reader(listener.fileno(), self._accept, listener)
        log.info("forwarder listening", address=f"{host}:{listener.getsockname()[1]}")

    async def close(self, grace_s: float = 5.0) -> None:
        """Stop accepting, give running streams ``grace_s`` to finish, then cut them."""
        if self._listener is not None:
            if self._accepting:
                asyncio.get_running_loop().remove_reader(self._listener.fileno())
            self._accepting = False
            self._listener.close()
            self._listener = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while self.active_streams and (left := deadline - loop.time()) > 0:
            if self._streams:
                await asyncio.wait(set(self._streams), timeout=min(left, _CLOSE_POLL_S))
            else:  # relays end in callbacks: nothing to wait on but the clock
                await asyncio.sleep(min(left, _CLOSE_POLL_S))
        self._cutting = True  # the lines of the relays ended here say so
        try:
            for running in list(self._relays):
                running.end()
        finally:
            self._cutting = False
        pending = set(self._streams)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    def _accept(self, listener: socket.socket) -> None:
        """The listener is readable: take what connections are there (a reader callback, not a
        task: no loop turn and no future per connection)."""
        for _ in range(_ACCEPT_BATCH):
            try:
                conn, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("forwarder accept failed", error=str(exc))
                if exc.errno in _OUT_OF_RESOURCES:  # back off instead of spinning
                    self._pause_accepting(listener)
                    return
                continue
            conn.settimeout(0.0)  # non-blocking
            if self.active_streams >= self._limits.max_streams:
                spawn(self._refuse_busy(conn), name="forwarder busy")
                continue
            self._open(conn, peer)

    def _open(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        """Serve the common case here, in the accept callback: the header is in (the listener
        defers the accept until it is), it names a TCP target allowed by IP address, and the
        connect to it completes at once (the peer itself, a fast LAN) — answer OK and start the
        relay, with no task or coroutine. Anything else goes on in a task from where it
        stands: nothing is read or dialled twice."""
        started = time.monotonic()
        buf = bytearray()
        try:
            request = take_request(conn, buf)
        except (HeaderError, OSError) as exc:
            self._spawn(self._serve(conn, peer, started, buf, failure=exc))
            return
        if (
            request is None
            or request.protocol is not Protocol.TCP
            or (family := _ip_family(request.target_host)) is None
            or not self._allowed.permits(request.target_host, request.target_port, Protocol.TCP)
        ):
            self._spawn(self._serve(conn, peer, started, buf))
            return
        try:
            target = _stream_socket(family)
        except OSError:  # out of descriptors, say: the task tries again, and answers why not
            self._spawn(self._serve(conn, peer, started, buf))
            return
        try:
            code = start_connect(target, (request.target_host, request.target_port))
        except OSError as exc:
            code = exc.errno or errno.EINVAL
        if code != 0:
            self._spawn(self._serve(conn, peer, started, buf, dialling=(target, code)))
            return
        stream = _Stream(self, conn, target, peer, request, started)
        if not _answer_ok(conn):
            stream.close()
            return
        try:
            running = Relay(
                conn, target, idle_timeout=self._limits.idle_timeout_s, on_done=stream.done,
                close_sockets=True,
            )  # fmt: skip
        except OSError as exc:  # the relay could not watch the sockets
            stream.close()
            log.warning("forward stream lost", **_about(peer, request), error=str(exc))
            return
        self._relays.add(running)

    def _spawn(self, serving: Coroutine[Any, Any, None]) -> None:
        task = spawn(serving, name="forward")
        self._streams.add(task)
        task.add_done_callback(self._streams.discard)

    def _pause_accepting(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(listener.fileno())
        self._accepting = False

        def resume() -> None:
            if self._listener is listener and not self._accepting:
                loop.add_reader(listener.fileno(), self._accept, listener)
                self._accepting = True

        loop.call_later(0.1, resume)

    async def _refuse_busy(self, conn: socket.socket) -> None:
        with conn:
            await _answer(conn, ForwardResponse(ForwardStatus.INTERNAL, "the agent is too busy"))

    async def _serve(
        self,
        conn: socket.socket,
        peer: tuple[str, int],
        started: float,
        buf: bytearray,
        *,
        failure: Exception | None = None,
        dialling: tuple[socket.socket, int] | None = None,
    ) -> None:
        """A stream ``_open`` could not finish at once: ``buf`` holds what it read of the header,
        ``failure`` what reading it raised, ``dialling`` the target's socket and its connect's
        first answer."""
        loop = asyncio.get_running_loop()
        limits = self._limits
        with conn:
            try:
                if failure is not None:
                    raise failure
                request = await read_request_from_socket(loop, conn, limits.header_timeout_s, buf)
            except HeaderError as exc:
                await _answer(conn, exc.response)
                log.warning(
                    "forward refused", edge=_edge(peer), status=exc.status.name, reason=exc.message
                )
                return
            except OSError as exc:
                log.warning("forward stream lost", edge=_edge(peer), error=str(exc))
                return
            if dialling is None and not self._allowed.permits(
                request.target_host, request.target_port, request.protocol
            ):
                message = (
                    f"{request.protocol.name.lower()} {request.target_host}:"
                    f"{request.target_port} is not a target of this peer"
                )
                await _answer(conn, ForwardResponse(ForwardStatus.TARGET_NOT_ALLOWED, message))
                log.warning("forward refused", **_about(peer, request), status="TARGET_NOT_ALLOWED")
                return
            try:
                target = await _dial(request, limits.connect_timeout_s, dialling)
            except _DialError as exc:
                await _answer(conn, exc.response)
                log.warning(
                    "forward failed",
                    **_about(peer, request),
                    status=exc.response.status.name,
                    reason=str(exc),
                )
                return
            with target:
                if not _answer_ok(conn):
                    return
                if request.protocol is Protocol.TCP:
                    stats = await relay(conn, target, idle_timeout=limits.idle_timeout_s)
                    sent, received = stats.a_to_b_bytes, stats.b_to_a_bytes
                    ended = _ending(stats)
                else:
                    sent, received, ended = await _relay_datagrams(
                        conn, target, limits.udp_idle_timeout_s
                    )
            self._forwarded(peer, request, started, sent, received, ended)

    def _forwarded(
        self,
        peer: tuple[str, int],
        request: ForwardRequest,
        started: float,
        sent: int,
        received: int,
        ended: str,
    ) -> None:
        if self._lines.enabled:  # one line per stream, without structlog's machinery
            self._lines.info(
                "forwarded",
                **_about(peer, request),
                bytes_to_target=sent,
                bytes_from_target=received,
                duration_ms=round((time.monotonic() - started) * 1000, 1),
                ended=ended,
            )


class _Stream:
    """A TCP stream relayed from callbacks: what its end needs (closing, its line)."""

    __slots__ = ("conn", "forwarder", "peer", "request", "started", "target")

    def __init__(
        self,
        forwarder: Forwarder,
        conn: socket.socket,
        target: socket.socket,
        peer: tuple[str, int],
        request: ForwardRequest,
        started: float,
    ) -> None:
        self.forwarder = forwarder
        self.conn = conn
        self.target = target
        self.peer = peer
        self.request = request
        self.started = started

    def close(self) -> None:
        self.target.close()
        self.conn.close()

    def done(self, running: Relay) -> None:
        """The relay has ended, and closed both sockets."""
        forwarder = self.forwarder
        forwarder._relays.discard(running)
        if running.exception is not None:  # a bug: said once, loudly, like a failed task
            log.error(
                "forward relay failed",
                **_about(self.peer, self.request),
                exc_info=running.exception,
            )
            return
        stats = running.stats()
        ended = "cut: the agent is stopping" if forwarder._cutting else _ending(stats)
        forwarder._forwarded(
            self.peer, self.request, self.started, stats.a_to_b_bytes, stats.b_to_a_bytes, ended
        )


def _edge(peer: tuple[str, int]) -> str:
    return f"{peer[0]}:{peer[1]}"


def _about(peer: tuple[str, int], request: ForwardRequest) -> dict[str, object]:
    """Who asked for what: the fields of a stream's log lines."""
    return {
        "edge": _edge(peer),
        "service": request.service_id or None,
        "client": f"{request.client_ip}:{request.client_port}",
        "target": f"{request.target_host}:{request.target_port}",
        "protocol": request.protocol.name.lower(),
    }


def _ending(stats: RelayStats) -> str:
    if stats.idle_timed_out:
        return "idle timeout"
    if stats.error:
        return stats.error
    if stats.first_closed is None:  # neither side ended it: the forwarder did
        return "cut"
    return f"closed by {'edge' if stats.first_closed == 'a' else 'target'}"


_OK = encode_response(ForwardResponse(ForwardStatus.OK))


def _answer_ok(conn: socket.socket) -> bool:
    """Answer OK (a few bytes into an empty send buffer: no wait); False when the edge is gone."""
    try:
        return conn.send(_OK) == len(_OK)
    except OSError:
        return False


async def _answer(conn: socket.socket, response: ForwardResponse) -> bool:
    """Send ``response``; False when the edge is already gone.

    A refusal is followed by a lingering close: closing a socket with unread bytes in it makes
    the kernel send a reset, which can destroy the answer before the edge reads it. So the agent
    stops writing, then reads and drops what the edge still sends, for a moment, before closing.
    """
    loop = asyncio.get_running_loop()
    try:
        await loop.sock_sendall(conn, encode_response(response))
        if response.ok:
            return True
        conn.shutdown(socket.SHUT_WR)
        async with asyncio.timeout(_LINGER_S):
            drained = 0
            while drained < _LINGER_BYTES and (chunk := await loop.sock_recv(conn, 65536)):
                drained += len(chunk)
    except (OSError, TimeoutError):
        return False
    return response.ok


async def _dial(
    request: ForwardRequest,
    timeout_s: float,
    dialling: tuple[socket.socket, int] | None = None,
) -> socket.socket:
    """A connected non-blocking socket to the target, or ``_DialError`` saying why not.
    ``dialling``: a socket already connecting to the target's IP address, and what
    ``start_connect`` answered."""
    loop = asyncio.get_running_loop()
    kind = socket.SOCK_STREAM if request.protocol is Protocol.TCP else socket.SOCK_DGRAM
    where = f"{request.target_host}:{request.target_port}"
    deadline = loop.time() + timeout_s
    infos = await _addresses(request, kind, deadline)
    failure = _DialError(ForwardStatus.UNREACHABLE, f"{where} has no address")
    for family_, type_, proto, _, address in infos:
        sock: socket.socket | None = None
        try:
            if dialling is not None:
                (sock, code), dialling = dialling, None
            else:  # out of descriptors, say: answered INTERNAL, like a failed connect
                sock = _target_socket(kind, family_, type_, proto)
                code = start_connect(sock, address)
            await settle_connect(loop, sock, code, max(deadline - loop.time(), 0.0))
        except OSError as exc:  # TimeoutError too
            if sock is not None:
                sock.close()
            failure = _connect_failure(exc, where, timeout_s)
            if failure.response.status is ForwardStatus.CONNECT_TIMEOUT:
                break  # the time is up for every address
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        else:
            return sock
    raise failure


_AddrInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, tuple[Any, ...]]


async def _addresses(
    request: ForwardRequest, kind: socket.SocketKind, deadline: float
) -> Sequence[_AddrInfo]:
    """Where the target is: its IP address (the header's parser made it canonical: no lookup),
    or what its name resolves to by ``deadline``; ``_DialError`` when it does not."""
    family = _ip_family(request.target_host)
    if family is not None:
        return [(family, kind, 0, "", (request.target_host, request.target_port))]
    where = f"{request.target_host}:{request.target_port}"
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout_at(deadline):
            return await loop.getaddrinfo(request.target_host, request.target_port, type=kind)
    except TimeoutError:
        raise _DialError(ForwardStatus.CONNECT_TIMEOUT, f"resolving {where} timed out") from None
    except socket.gaierror as exc:
        raise _DialError(ForwardStatus.UNREACHABLE, f"cannot resolve {where}: {exc}") from None


def _target_socket(
    kind: socket.SocketKind, family: socket.AddressFamily, type_: int, proto: int
) -> socket.socket:
    if kind == socket.SOCK_STREAM:
        return _stream_socket(family, proto)
    return socket.socket(family, type_ | socket.SOCK_NONBLOCK, proto)


def _connect_failure(exc: OSError, where: str, timeout_s: float) -> _DialError:
    if isinstance(exc, TimeoutError):
        return _DialError(
            ForwardStatus.CONNECT_TIMEOUT, f"connecting to {where} timed out after {timeout_s:g} s"
        )
    if isinstance(exc, ConnectionRefusedError):
        return _DialError(ForwardStatus.CONNECTION_REFUSED, f"{where} refused the connection")
    status = (
        ForwardStatus.UNREACHABLE if exc.errno in _UNREACHABLE_ERRNOS else ForwardStatus.INTERNAL
    )
    return _DialError(status, f"cannot connect to {where}: {exc.strerror or exc}")


def _stream_socket(family: socket.AddressFamily, proto: int = 0) -> socket.socket:
    """A non-blocking TCP socket for a target: no Nagle wait on what the relay writes."""
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK, proto)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except BaseException:
        sock.close()
        raise
    return sock


def _ip_family(host: str) -> socket.AddressFamily | None:
    """The family of ``host`` if it is an IP address, else None (a name to resolve)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
        except OSError:
            continue
        return family
    return None


async def _relay_datagrams(
    stream: socket.socket, udp: socket.socket, idle_timeout_s: float
) -> tuple[int, int, str]:
    """Datagrams between the edge's stream (length-framed) and the target's UDP socket."""
    loop = asyncio.get_running_loop()
    counts = [0, 0]
    last_activity = [time.monotonic()]

    async def to_target() -> str:
        decoder = DatagramDecoder()
        while True:
            data = await loop.sock_recv(stream, 256 * 1024)
            if not data:
                return "closed by edge"
            last_activity[0] = time.monotonic()
            for datagram in decoder.feed(data):
                counts[0] += len(datagram)
                with contextlib.suppress(ConnectionRefusedError):  # ICMP: nobody there (yet)
                    udp.send(datagram)

    async def from_target() -> str:
        while True:
            try:
                datagram = await loop.sock_recv(udp, _MAX_DATAGRAM)
            except ConnectionRefusedError:
                continue  # a port-unreachable for an earlier datagram
            last_activity[0] = time.monotonic()
            counts[1] += len(datagram)
            await loop.sock_sendall(stream, encode_datagram(datagram))

    async def idle() -> str:
        while True:
            remaining = last_activity[0] + idle_timeout_s - time.monotonic()
            if remaining <= 0:
                return "idle timeout"
            await asyncio.sleep(remaining)

    ended = await _first_of(to_target, from_target, idle)
    return counts[0], counts[1], ended


async def _first_of(*jobs: Callable[[], Coroutine[Any, Any, str]]) -> str:
    """Run ``jobs`` together; the first to finish says how it ended, the others are cancelled."""
    tasks = [spawn(job(), name="udp session") for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(iter(done))
    try:
        return first.result()
    except OSError as exc:
        return f"error: {exc.strerror or exc}"
