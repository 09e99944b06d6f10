"""``python -m heron_edge.worker --control-fd N``: one data-plane process of the edge.

Started by the edge's control process (``heron_edge.workers``), never by hand: it reads the
same settings from the environment, binds the public ports with ``SO_REUSEPORT``, says
``listening``, and serves whatever routing table, certificates and ACME challenge answers the
control process sends.
SIGTERM (or the control socket closing) stops it gracefully.
"""

import argparse
import asyncio
import signal
import socket
import sys

import structlog
import uvloop
from pydantic import ValidationError

from heron_core.errors import ConfigError
from heron_core.logging import LineLogger, configure_logging
from heron_core.process import calm_garbage_collector
from heron_edge.address import Address
from heron_edge.dataplane import DataPlane
from heron_edge.http.proxy import ProxyContext
from heron_edge.l4.context import L4Context
from heron_edge.settings import EdgeSettings
from heron_edge.workers import REPLAYED, ProtocolError, encode, read_message

log = structlog.get_logger(__name__)

SHUTDOWN_GRACE_S = 5.0


async def serve(settings: EdgeSettings, control_fd: int, index: int) -> int:
    sock = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_connection(sock=sock)
    access = LineLogger("heron_edge.access", worker=index)
    plane = DataPlane(
        ProxyContext(limits=settings.http_limits(), access=access, auth=settings.edge_auth()),
        main=Address.parse(settings.proxy_address),
        http=Address.parse(settings.proxy_http_address) if settings.proxy_http_address else None,
        l4=L4Context(limits=settings.l4_limits(), access=access),
        # one process holds the UDP ports, so a client's session and the bounds are global
        serve_udp=index == 0,
        health_port=settings.health_port,
    )
    applied = 0

    def take(kind: str, payload: object) -> None:
        nonlocal applied
        if kind != REPLAYED and not plane.apply(kind, payload):
            log.warning("unknown control message ignored", kind=kind)
        applied += 1  # every message counts: the control process counts what it sent
        writer.write(encode("applied", applied))

    # the state first, then the ports: a restarted worker never answers with an empty table
    try:
        while (message := await read_message(reader)) is not None:
            take(*message)
            if message[0] == REPLAYED:
                break
        else:
            return 0  # the control process is gone
    except (ProtocolError, ConnectionError) as exc:
        log.error("control stream broke", error=str(exc))
        return 1
    try:
        await plane.start()
    except OSError as exc:
        writer.write(encode("error", f"cannot listen: {exc}"))
        await writer.drain()
        log.error("cannot listen", error=str(exc))
        return 1
    writer.write(encode("listening", {"main": plane.main_port, "http": plane.http_port}))
    calm_garbage_collector()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stopped = loop.create_task(stop.wait())
    try:
        while True:
            message_task = loop.create_task(read_message(reader))
            done, _ = await asyncio.wait(
                {message_task, stopped}, return_when=asyncio.FIRST_COMPLETED
            )
            if stopped in done:
                message_task.cancel()
                break
            message = message_task.result()
            if message is None:
                break  # the control process is gone
            take(*message)
    except (ProtocolError, ConnectionError) as exc:
        log.error("control stream broke", error=str(exc))
    finally:
        await plane.stop(SHUTDOWN_GRACE_S)
        writer.close()
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(prog="heron_edge.worker")
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--index", type=int, default=0)
    args = parser.parse_args()
    try:
        settings = EdgeSettings()
    except (ConfigError, ValidationError) as exc:
        print(f"heron-edge worker: {exc}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    configure_logging("edge", level=settings.log_level, fmt=settings.log_format)
    structlog.contextvars.bind_contextvars(worker=args.index)
    sys.exit(uvloop.run(serve(settings, args.control_fd, args.index)))


if __name__ == "__main__":
    main()
