"""TLS services: the client's TLS goes through to the target untouched, chosen by SNI.

The SNI router has only peeked at the ClientHello, so every byte the client sent — the hello
included — is still in the socket; the relay moves it to the stream the agent opened, and the
client's handshake happens with the target, against the target's own certificate. The edge
never sees the plaintext. With ``proxy_protocol`` on, a PROXY v2 header naming the client goes
first. One log line per connection: bytes both ways, duration, who closed.
"""

import asyncio
import contextlib
import itertools
import socket
import time

import structlog

from heron_edge.connector import TunnelError, open_stream
from heron_edge.routes import Route
from heron_tunnel import proxy_protocol
from heron_tunnel.relay import Side, relay

log = structlog.get_logger("heron_edge.passthrough")

#: a passed-through connection that moves no byte this long is closed
IDLE_TIMEOUT_S = 300.0

_turns = itertools.count()


async def pass_through(
    route: Route,
    sock: socket.socket,
    client: tuple[str, int],
    local: tuple[str, int],
    *,
    idle_timeout_s: float = IDLE_TIMEOUT_S,
) -> None:
    """Relay ``sock`` to one of ``route``'s enabled targets (the next one in turn; a target
    whose agent refuses or cannot be reached is skipped); closes ``sock`` in every case."""
    started = time.monotonic()
    targets = [t for t in route.targets if t.enabled]
    upstream: socket.socket | None = None
    failures: list[str] = []
    try:
        first = next(_turns)
        for offset in range(len(targets)):
            target = targets[(first + offset) % len(targets)]
            try:
                upstream = await open_stream(target.stream, client)
            except TunnelError as exc:
                failures.append(f"{target.id}: {exc.message}")
                continue
            if target.options.proxy_protocol:
                header = proxy_protocol.encode(client, local)
                await asyncio.get_running_loop().sock_sendall(upstream, header)
            break
        if upstream is None:
            log.warning(
                "tls connection dropped: no target answered",
                service=route.id, domain=route.domain, client=client[0],
                failures=failures or ["the service has no enabled target"],
            )  # fmt: skip
            return
        stats = await relay(sock, upstream, idle_timeout=idle_timeout_s)
        log.info(
            "tls connection",
            service=route.id, domain=route.domain, client=client[0],
            bytes_in=stats.a_to_b_bytes, bytes_out=stats.b_to_a_bytes,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            closed_by="client" if stats.first_closed is Side.A else "target",
            idle_timeout=stats.idle_timed_out, error=stats.error,
        )  # fmt: skip
    except OSError as exc:
        log.info("tls connection failed", service=route.id, client=client[0], error=str(exc))
    finally:
        for s in (sock, upstream):
            if s is not None:
                with contextlib.suppress(OSError):
                    s.close()
