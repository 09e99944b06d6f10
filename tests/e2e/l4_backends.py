"""Backends for the L4 end-to-end test, all on 127.0.0.1 of the peer host.

    python l4_backends.py --echo PORT --udp-echo PORT --tls PORT CERT KEY --proxied PORT

- ``--echo``: a TCP echo;
- ``--udp-echo``: a UDP echo that prefixes each reply with ``echo:``;
- ``--tls``: a TLS server with its own certificate that greets with ``tls backend`` and echoes;
- ``--proxied``: expects a PROXY v2 header (parsed with ``heron_tunnel.proxy_protocol``) and
  answers ``source=<addr>:<port>`` before echoing.

Prints ``READY`` once every server listens; runs until terminated.
"""

import argparse
import asyncio
import contextlib
import ssl

from heron_tunnel import proxy_protocol

HOST = "127.0.0.1"


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


async def greet_then_echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"tls backend\n")
    await echo(reader, writer)


async def read_proxy_header(reader: asyncio.StreamReader) -> proxy_protocol.ProxyHeader | None:
    """The PROXY v2 header the connection starts with; None when it ends first."""
    data = b""
    header = proxy_protocol.parse(data)
    while isinstance(header, proxy_protocol.NeedMore):
        chunk = await reader.read(header.at_least - len(data))
        if not chunk:
            return None
        data += chunk
        header = proxy_protocol.parse(data)
    return header


async def proxied(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    header = await read_proxy_header(reader)
    if header is None:
        writer.close()
        return
    source = f"{header.source[0]}:{header.source[1]}" if header.source else "local"
    writer.write(f"source={source}\n".encode())
    await echo(reader, writer)


class UdpEcho(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(b"echo:" + data, addr)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--echo", type=int, required=True)
    parser.add_argument("--udp-echo", type=int, required=True)
    parser.add_argument("--tls", nargs=3, metavar=("PORT", "CERT", "KEY"), required=True)
    parser.add_argument("--proxied", type=int, required=True)
    args = parser.parse_args()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls[1], args.tls[2])
    servers = [
        await asyncio.start_server(echo, HOST, args.echo),
        await asyncio.start_server(greet_then_echo, HOST, int(args.tls[0]), ssl=context),
        await asyncio.start_server(proxied, HOST, args.proxied),
    ]
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(UdpEcho, local_addr=(HOST, args.udp_echo))
    print("READY", flush=True)
    await asyncio.gather(*(server.serve_forever() for server in servers))


if __name__ == "__main__":
    asyncio.run(main())
