"""Run inside a fresh network namespace: three tunnel streams from the edge's ``open_stream`` to
an agent ``Forwarder`` with TCP Fast Open, on its loopback; prints what the kernel counted."""

import asyncio
import json
import socket
import sys
from pathlib import Path

import uvloop

from heron_agent.allowed import AllowedTarget, AllowedTargets
from heron_agent.forwarder import Forwarder, ForwarderLimits
from heron_edge.connector import StreamTarget, TunnelError, open_stream
from heron_tunnel.header import Protocol

STREAMS = 3


def counters() -> dict[str, int]:
    """The TcpExt counters of this namespace (``/proc/net/netstat``)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=True):
        if names.startswith("TcpExt:"):
            return dict(zip(names.split()[1:], map(int, values.split()[1:]), strict=True))
    raise SystemExit("no TcpExt counters")


def fast_open_sysctl() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_fastopen").read_text())


async def unanswered_syn(loop: asyncio.AbstractEventLoop, answer_timeout_s: float = 15.0) -> str:
    """A stream to an agent whose accept queue is full, so that its SYN (with the header and
    the cookie) is dropped: the connect timeout must still say so."""
    with socket.socket() as full:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        fillers = [socket.socket() for _ in range(2)]
        for filler in fillers:
            filler.setblocking(False)  # noqa: FBT003
            filler.connect_ex(full.getsockname())
        await asyncio.sleep(0.2)
        target = StreamTarget("127.0.0.1", "", 9, forwarder_port=full.getsockname()[1])
        started = loop.time()
        try:
            await open_stream(
                target,
                ("192.0.2.7", 40999),
                connect_timeout_s=0.5,
                answer_timeout_s=answer_timeout_s,
            )
        except TunnelError as exc:
            return f"{exc.status.name} after {loop.time() - started:.1f} s: {exc.message}"
        finally:
            for filler in fillers:
                filler.close()
    return "connected"


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(await reader.readline())
    await writer.drain()
    writer.close()


async def main(fast_open: bool) -> None:
    loop = asyncio.get_running_loop()
    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    allowed = AllowedTargets([AllowedTarget.of("127.0.0.1", port, Protocol.TCP)])
    forwarder = Forwarder(allowed, ForwarderLimits(fast_open=fast_open))
    await forwarder.start("127.0.0.1", 0)
    before = counters()
    replies = []
    for n in range(STREAMS):
        target = StreamTarget("127.0.0.1", "", port, forwarder_port=forwarder.address[1])
        with await open_stream(target, ("192.0.2.7", 40000 + n)) as sock:
            await loop.sock_sendall(sock, f"stream {n}\n".encode())
            replies.append((await loop.sock_recv(sock, 100)).decode())
    after = counters()
    await forwarder.close(grace_s=1)
    server.close()
    unanswered = await unanswered_syn(loop)
    # an answer timeout shorter than the connect timeout: still no handshake, not a bad header
    unanswered_short = await unanswered_syn(loop, answer_timeout_s=0.3)
    print(json.dumps({
        "replies": replies,
        "sysctl": fast_open_sysctl(),
        "unanswered": unanswered,
        "unanswered_short": unanswered_short,
        "passive": after["TCPFastOpenPassive"] - before["TCPFastOpenPassive"],
        "active": after["TCPFastOpenActive"] - before["TCPFastOpenActive"],
        "cookie_requests": after["TCPFastOpenCookieReqd"] - before["TCPFastOpenCookieReqd"],
        "streams": STREAMS,
    }))  # fmt: skip


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1] == "on"))
