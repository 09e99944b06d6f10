"""The Python sides of ``bench/tunnel.py``, each run in a network namespace as its own process.

``tunnel.py`` starts them with ``ip netns exec <ns> <python> bench/_tunnel_sides.py <role> …``:

- ``agent`` (peer namespace): the agent's ``Forwarder`` on the overlay address, allowing only the
  given ports on the peer's ``127.0.0.1``.
- ``edge`` (edge namespace): a listener on ``127.0.0.1`` that, for each connection, opens a
  stream through the forwarder with the edge's ``open_stream`` and relays the two with
  ``relay`` — Heron's L4 path, minus the public-side TLS and access checks.
- ``echo`` (peer namespace): echoes every byte back, on each address given.
- ``setup`` (edge namespace): times sequential connections, plain and through the forwarder,
  each with a one-byte echo, prints the times (ms) and exits.

Every role writes protocol lines on stdout (``READY {json}`` once it serves, ``RELAY {json}``
per finished relay, ``SETUP {json}``); logs go to stderr, warnings and worse only.

Both relaying roles call ``relay`` through ``bench_relay``, which passes ``--copy`` and
``--buffer-size`` on and reports each relay's stats. The agent's ``Forwarder`` takes no such
options, so in this process (only) the ``relay`` name in ``heron_agent.forwarder`` is bound to
``bench_relay``; the library is unchanged. ``--instrument`` also counts each direction's moves
(reads that got bytes, reads that found none and made the relay wait, writes, bytes) by
wrapping the movers ``relay`` opens: what a profiler would say about the loop, at the price of
one Python call per move.
"""

import argparse
import asyncio
import contextlib
import contextvars
import functools
import json
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from heron_agent import forwarder as forwarder_module
from heron_agent.allowed import AllowedTarget, AllowedTargets
from heron_agent.forwarder import Forwarder
from heron_core.logging import configure_logging
from heron_core.settings import LogFormat
from heron_core.tasks import spawn
from heron_edge.connector import StreamTarget, TunnelError, open_stream
from heron_tunnel import _movers
from heron_tunnel.header import Protocol
from heron_tunnel.relay import DEFAULT_BUFFER_BYTES, RelayStats, relay

#: one timed connection in the setup role, from connect to echo; a live tunnel takes milliseconds
SETUP_TIMEOUT_S = 15.0
#: connections of each kind made and thrown away before the setup role starts timing
SETUP_WARMUP = 5
#: what the ``client`` field of the forwarder header says in the setup role
SETUP_CLIENT = ("127.0.0.1", 40000)


def emit(kind: str, payload: dict[str, Any]) -> None:
    """One protocol line for ``tunnel.py``: ``KIND {json}``."""
    sys.stdout.write(f"{kind} {json.dumps(payload)}\n")
    sys.stdout.flush()


# -- the relay, as both sides run it -----------------------------------------------------------

#: the move counters of the relay running in this context (``--instrument``), one per direction
_moves: contextvars.ContextVar[list[dict[str, int]] | None] = contextvars.ContextVar(
    "moves", default=None
)


async def bench_relay(
    a: socket.socket,
    b: socket.socket,
    *,
    side: str,
    copy: bool,
    buffer_size: int,
    report: dict[str, Any] | None = None,
    **options: Any,
) -> RelayStats:
    """``relay`` with the bench's options; one ``RELAY`` line with its stats when it ends."""
    moves: list[dict[str, int]] = []
    token = _moves.set(moves)
    try:
        stats = await relay(a, b, force_copy=copy, buffer_size=buffer_size, **options)
    finally:
        _moves.reset(token)
    emit(
        "RELAY",
        {
            "side": side,
            **(report or {}),
            "a_to_b_bytes": stats.a_to_b_bytes,
            "b_to_a_bytes": stats.b_to_a_bytes,
            "duration_s": round(stats.duration_s, 3),
            "zero_copy": stats.zero_copy,
            "error": stats.error,
            "moves": moves,  # [a→b, b→a] when instrumented, else empty
        },
    )
    return stats


def instrument_movers() -> None:
    """Count every mover's reads, waits and writes (``--instrument``), in this process only."""
    open_mover = _movers.open_mover

    def counting_open_mover(*args: Any, **kwargs: Any) -> _movers.Mover:
        mover = open_mover(*args, **kwargs)
        counts = {"reads": 0, "empty_reads": 0, "writes": 0, "full_writes": 0, "bytes": 0}
        read, write = mover.read, mover.write

        def counted_read() -> int | None:
            got = read()
            if got is None:
                counts["empty_reads"] += 1
            else:
                counts["reads"] += 1
                counts["bytes"] += got
            return got

        def counted_write() -> int | None:
            sent = write()
            counts["full_writes" if sent is None else "writes"] += 1
            return sent

        mover.read = counted_read  # type: ignore[method-assign]
        mover.write = counted_write  # type: ignore[method-assign]
        if (moves := _moves.get()) is not None:
            moves.append(counts)
        return mover

    _movers.open_mover = counting_open_mover


def relay_options(args: argparse.Namespace, side: str) -> functools.partial[Any]:
    if args.instrument:
        instrument_movers()
    return functools.partial(bench_relay, side=side, copy=args.copy, buffer_size=args.buffer_size)


# -- agent -------------------------------------------------------------------------------------


async def run_agent(args: argparse.Namespace) -> None:
    # the forwarder calls ``relay(conn, target, idle_timeout=…)``: a → b is edge → target
    forwarder_module.relay = relay_options(args, "agent")  # type: ignore[attr-defined]
    allowed = AllowedTargets(
        AllowedTarget.of("127.0.0.1", port, Protocol.TCP) for port in args.allow
    )
    fwd = Forwarder(allowed)
    await fwd.start(args.listen, args.port)
    emit("READY", {"role": "agent", "address": list(fwd.address)})
    try:
        await asyncio.Event().wait()  # until SIGTERM
    finally:
        await fwd.close(grace_s=0.5)


# -- edge --------------------------------------------------------------------------------------


async def run_edge(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    target = StreamTarget(
        args.peer, "127.0.0.1", args.target_port, forwarder_port=args.forwarder_port
    )
    bound_relay = relay_options(args, "edge")
    listener = socket.create_server((args.listen, args.port), backlog=128)
    listener.settimeout(0.0)  # non-blocking
    emit("READY", {"role": "edge", "address": list(listener.getsockname()[:2])})
    with listener:
        while True:
            conn, client = await loop.sock_accept(listener)
            spawn(_edge_connection(conn, client, target, bound_relay), name=f"edge {client}")


async def _edge_connection(
    conn: socket.socket,
    client: tuple[str, int],
    target: StreamTarget,
    bound_relay: functools.partial[Any],
) -> None:
    """As the edge's L4 path will: open a stream for the client, then relay (a → b: to the peer)."""
    started = time.monotonic()
    with conn:
        conn.settimeout(0.0)  # non-blocking
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            stream = await open_stream(target, (client[0], client[1]))
        except TunnelError as exc:
            emit("RELAY", {"side": "edge", "error": f"{exc.status.name}: {exc.message}"})
            return
        with stream:
            opened_ms = round((time.monotonic() - started) * 1000, 3)
            await bound_relay(conn, stream, report={"open_ms": opened_ms})


# -- echo --------------------------------------------------------------------------------------


async def run_echo(args: argparse.Namespace) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    servers = [await asyncio.start_server(echo, host, args.port) for host in args.listen]
    emit("READY", {"role": "echo", "addresses": [f"{host}:{args.port}" for host in args.listen]})
    try:
        await asyncio.Event().wait()
    finally:
        for server in servers:
            server.close()


# -- setup -------------------------------------------------------------------------------------


async def run_setup(args: argparse.Namespace) -> None:
    """Alternate plain and forwarded connections (which goes first alternates too), timing each."""
    stream_target = StreamTarget(
        args.peer, "127.0.0.1", args.stream_port, forwarder_port=args.forwarder_port
    )
    kinds: dict[str, Callable[[], Awaitable[socket.socket]]] = {
        "plain": functools.partial(_plain_connect, args.peer, args.plain_port),
        "stream": functools.partial(open_stream, stream_target, SETUP_CLIENT),
    }
    timings: dict[str, list[float]] = {kind: [] for kind in kinds}
    deadline = time.monotonic() + args.time_limit
    for round_ in range(SETUP_WARMUP + args.count):
        if time.monotonic() > deadline:
            break
        order = list(kinds) if round_ % 2 == 0 else list(reversed(kinds))
        for kind in order:
            elapsed = await _one_echo(kinds[kind])
            if round_ >= SETUP_WARMUP:
                timings[kind].append(elapsed * 1000)
    emit("SETUP", {kind: [round(ms, 4) for ms in values] for kind, values in timings.items()})


async def _plain_connect(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.0)  # non-blocking
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _one_echo(connect: Callable[[], Awaitable[socket.socket]]) -> float:
    """Seconds from the start of ``connect`` to one byte echoed back; the connection is closed."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    async with asyncio.timeout(SETUP_TIMEOUT_S):
        sock = await connect()
        with sock:
            await loop.sock_sendall(sock, b"x")
            if await loop.sock_recv(sock, 1) != b"x":
                raise RuntimeError("the echo server did not echo")
            elapsed = time.perf_counter() - started
    return elapsed


# -- main --------------------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    roles = parser.add_subparsers(dest="role", required=True)

    agent = roles.add_parser("agent", help="the agent's forwarder on the overlay address")
    agent.add_argument("--listen", required=True)
    agent.add_argument("--port", type=int, required=True)
    agent.add_argument(
        "--allow", type=int, action="append", required=True, help="a port on 127.0.0.1"
    )

    edge = roles.add_parser("edge", help="a listener relaying each connection through open_stream")
    edge.add_argument("--listen", default="127.0.0.1")
    edge.add_argument("--port", type=int, required=True)
    edge.add_argument("--peer", required=True, help="the peer's overlay address")
    edge.add_argument("--forwarder-port", type=int, required=True)
    edge.add_argument("--target-port", type=int, required=True, help="on the peer's 127.0.0.1")

    for role in (agent, edge):
        role.add_argument("--copy", action="store_true", help="relay with recv/send, not splice")
        role.add_argument("--buffer-size", type=int, default=DEFAULT_BUFFER_BYTES)
        role.add_argument("--instrument", action="store_true", help="count the relay's moves")

    echo = roles.add_parser("echo", help="an echo server")
    echo.add_argument("--listen", action="append", required=True)
    echo.add_argument("--port", type=int, required=True)

    setup = roles.add_parser("setup", help="time connections, plain and through the forwarder")
    setup.add_argument("--peer", required=True)
    setup.add_argument("--plain-port", type=int, required=True, help="echo on the overlay address")
    setup.add_argument("--forwarder-port", type=int, required=True)
    setup.add_argument(
        "--stream-port", type=int, required=True, help="echo on the peer's 127.0.0.1"
    )
    setup.add_argument("--count", type=int, required=True)
    setup.add_argument("--time-limit", type=float, required=True, help="seconds")
    return parser.parse_args(argv)


async def amain(args: argparse.Namespace) -> None:
    roles = {"agent": run_agent, "edge": run_edge, "echo": run_echo, "setup": run_setup}
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, main.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await roles[args.role](args)


def main() -> None:
    args = parse_args(sys.argv[1:])
    configure_logging(f"bench-{args.role}", level="warning", fmt=LogFormat.JSON)
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
