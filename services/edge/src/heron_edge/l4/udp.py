"""UDP services: sessions per client address, each riding its own tunnel stream.

The port's socket is read in batches from a reader callback. The first datagram from a new
client address opens a *session*: a tunnel stream to a target (``Protocol.UDP``: the agent
dials the target with a connected UDP socket), over which datagrams travel length-framed
(``heron_tunnel.datagrams``). Datagrams that arrive while the stream opens wait in a short
bounded list; beyond it, and whenever the stream cannot take more, they are dropped and
counted — UDP may lose datagrams, an edge may not hold unbounded queues. Replies are sent back
from the port's socket to the client's address.

Sessions are bounded per service and per process (new ones are refused and counted when
full) and rate-limited per port (a token bucket), so a flood from many source ports cannot
grow the table past its bound. A session with no datagram either way for the service's
``session_idle_timeout`` is reaped; its access record says how much it moved and why it ended.
Closing the port ends its sessions: without the socket no reply could reach the client.
"""

import asyncio
import socket
import time
from typing import cast

import structlog

from heron_core.tasks import spawn
from heron_edge.l4.context import L4Context
from heron_edge.l4.dial import NoTargetError, dial
from heron_edge.routes import Route, RouteTarget
from heron_tunnel.datagrams import MAX_DATAGRAM_BYTES, DatagramDecoder, encode_datagram

log = structlog.get_logger("heron_edge.l4")

READ_BATCH = 64
#: refusals (full table, rate) are logged at most this often per port
_REFUSAL_LOG_INTERVAL_S = 10.0
#: the reaper looks at least this often, and at most as often as the shortest idle timeout / 4
_REAP_MAX_INTERVAL_S = 5.0
_REAP_MIN_INTERVAL_S = 0.05


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._at = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


class UdpPort:
    """The socket of one UDP port and its client sessions."""

    def __init__(self, ctx: L4Context, route: Route, sock: socket.socket) -> None:
        self.ctx = ctx
        self.route = route
        self.sock = sock
        self.port: int = sock.getsockname()[1]
        self.sessions: dict[tuple[str, int], UdpSession] = {}
        limits = ctx.limits
        self._bucket = TokenBucket(limits.udp_new_sessions_per_s, limits.udp_new_sessions_burst)
        self.refused_full = 0
        self.refused_rate = 0
        self.dropped_replies = 0
        self._refusal_logged_at = 0.0
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._loop.add_reader(sock.fileno(), self._readable)
        self._reaper = spawn(self._reap(), name=f"udp reaper :{self.port}")

    def close(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self._loop.remove_reader(self.sock.fileno())
        self._reaper.cancel()
        for session in list(self.sessions.values()):
            session.cut(reason)
        self.sock.close()

    def send_to_client(self, datagram: bytes, client: tuple[str, int]) -> None:
        if self._closed:
            return
        try:
            self.sock.sendto(datagram, client)
        except (BlockingIOError, InterruptedError):
            self.dropped_replies += 1  # the socket's send buffer is full: UDP may drop
        except OSError as exc:
            log.debug("reply not sent", port=self.port, client=client[0], error=str(exc))

    def session_ended(self, session: "UdpSession") -> None:
        if self.sessions.get(session.client) is session:
            del self.sessions[session.client]
            self.ctx.udp_sessions -= 1

    def _readable(self) -> None:
        for _ in range(READ_BATCH):
            try:
                datagram, client = self.sock.recvfrom(MAX_DATAGRAM_BYTES)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.debug("receive failed", port=self.port, error=str(exc))
                return
            client = (client[0], client[1])
            session = self.sessions.get(client)
            if session is None:
                session = self._open(client)
                if session is None:
                    continue
            session.from_client(datagram)

    def _open(self, client: tuple[str, int]) -> "UdpSession | None":
        limits = self.ctx.limits
        if (
            len(self.sessions) >= limits.udp_max_sessions_per_service
            or self.ctx.udp_sessions >= limits.udp_max_sessions
        ):
            self.refused_full += 1
            self._log_refusals()
            return None
        if not self._bucket.take():
            self.refused_rate += 1
            self._log_refusals()
            return None
        session = UdpSession(self, client)
        self.sessions[client] = session
        self.ctx.udp_sessions += 1
        session.start()
        return session

    def _log_refusals(self) -> None:
        now = time.monotonic()
        if now - self._refusal_logged_at < _REFUSAL_LOG_INTERVAL_S:
            return
        self._refusal_logged_at = now
        limits = self.ctx.limits
        log.warning(
            "new udp sessions refused",
            port=self.port, service_id=self.route.id, sessions=len(self.sessions),
            sessions_in_process=self.ctx.udp_sessions,
            refused_table_full=self.refused_full, refused_rate=self.refused_rate,
            limit_per_service=limits.udp_max_sessions_per_service,
            limit_total=limits.udp_max_sessions, rate_per_s=limits.udp_new_sessions_per_s,
        )  # fmt: skip

    def _reap_interval(self) -> float:
        shortest = min(
            (self.ctx.limits.udp_idle_timeout(t) for t in self.route.targets if t.enabled),
            default=self.ctx.limits.udp_session_idle_s,
        )
        return max(_REAP_MIN_INTERVAL_S, min(shortest / 4, _REAP_MAX_INTERVAL_S))

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(self._reap_interval())
            now = time.monotonic()
            for session in list(self.sessions.values()):
                if now - session.last_active >= session.idle_timeout_s:
                    session.cut("idle timeout")


class UdpSession(asyncio.Protocol):
    """One client address of a UDP port and its tunnel stream."""

    def __init__(self, port: UdpPort, client: tuple[str, int]) -> None:
        self.port = port
        self.route = port.route
        self.client = client
        self.started = self.last_active = time.monotonic()
        self.idle_timeout_s = port.ctx.limits.udp_session_idle_s
        self.target: RouteTarget | None = None
        self.bytes_in = self.bytes_out = 0
        self.datagrams_in = self.datagrams_out = 0
        self.dropped = 0
        self.cut_reason: str | None = None
        self._pending: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._paused = False
        self._decoder = DatagramDecoder()
        self._task: asyncio.Task[None] | None = None
        self._ended = False

    def start(self) -> None:
        self.port.ctx.relays.add(self.route.id, self)
        self._task = spawn(self._connect(), name=f"udp session {self.client[0]}")

    async def _connect(self) -> None:
        ctx = self.port.ctx
        try:
            target, stream = await dial(ctx, self.route, self.client)
        except NoTargetError as exc:
            log.warning(
                "udp session dropped: no target answered",
                service_id=self.route.id, client=self.client[0], failures=exc.failures,
            )  # fmt: skip
            self._end("no target answered")
            return
        except asyncio.CancelledError:
            self._end(self.cut_reason or "cancelled")
            raise
        self.target = target
        self.idle_timeout_s = ctx.limits.udp_idle_timeout(target)
        if self._ended:
            stream.close()
            return
        try:
            await asyncio.get_running_loop().create_connection(lambda: self, sock=stream)
        except OSError as exc:
            stream.close()
            self._end(f"error: {exc}")

    # --- client → target
    def from_client(self, datagram: bytes) -> None:
        self.last_active = time.monotonic()
        self.bytes_in += len(datagram)
        self.datagrams_in += 1
        transport = self._transport
        if transport is None:
            if len(self._pending) < self.port.ctx.limits.udp_pending_datagrams:
                self._pending.append(datagram)
            else:
                self.dropped += 1
        elif self._paused:
            self.dropped += 1  # the tunnel stream is backed up: drop rather than queue
        else:
            transport.write(encode_datagram(datagram))

    # --- the tunnel stream (asyncio.Protocol)
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = stream = cast("asyncio.Transport", transport)  # uvloop's: no subclass
        if self.cut_reason is not None:
            stream.close()
            return
        pending, self._pending = self._pending, []
        for datagram in pending:
            stream.write(encode_datagram(datagram))

    def data_received(self, data: bytes) -> None:
        datagrams = self._decoder.feed(data)
        if not datagrams:
            return
        self.last_active = time.monotonic()
        for datagram in datagrams:
            self.bytes_out += len(datagram)
            self.datagrams_out += 1
            self.port.send_to_client(datagram, self.client)

    def eof_received(self) -> bool:
        return False  # the agent ended the session (its target's socket failed or timed out)

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False

    def connection_lost(self, exc: Exception | None) -> None:
        self._end(self.cut_reason or ("target closed" if exc is None else f"error: {exc}"))

    # --- ending
    def cut(self, reason: str) -> None:
        if self.cut_reason is None:
            self.cut_reason = reason
        if self._transport is not None:
            self._transport.close()  # connection_lost ends the session
        elif self._task is not None and not self._task.done():
            self._task.cancel()
        else:
            self._end(reason)

    def _end(self, reason: str) -> None:
        if self._ended:
            return
        self._ended = True
        self.port.session_ended(self)
        ctx = self.port.ctx
        ctx.relays.discard(self.route.id, self)
        ctx.access.info(
            "session",
            protocol="udp", service_id=self.route.id, domain=self.route.domain,
            port=self.port.port, client=self.client[0], client_port=self.client[1],
            target=self.target.id if self.target is not None else None,
            bytes_in=self.bytes_in, bytes_out=self.bytes_out,
            datagrams_in=self.datagrams_in, datagrams_out=self.datagrams_out,
            dropped=self.dropped,
            duration_ms=round((time.monotonic() - self.started) * 1000, 1),
            close_reason=reason,
        )  # fmt: skip
