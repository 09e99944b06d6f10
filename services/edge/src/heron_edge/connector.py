"""``open_stream``: a connected stream to a target, through the agent of the peer that reaches it.

The edge connects to the agent's forwarder at the peer's overlay address (through the WireGuard
interface), sends the forwarder header naming the target and the client, and waits for the
agent's answer. What comes back is the bare connected socket, ready for ``heron_tunnel.relay``
(L4) or for an HTTP client connection (L7); a refusal becomes a ``TunnelError`` whose status says
whose fault it is (not allowed, refused by the target, unreachable, timed out).
"""

import asyncio
import errno
import socket
from dataclasses import dataclass

from heron_core.errors import HeronError
from heron_tunnel.header import (
    ForwardRequest,
    ForwardStatus,
    HeaderError,
    Protocol,
    encode_request,
    read_response_from_socket,
)
from heron_tunnel.sockets import connect, delay_acks

#: the agent's forwarder port when its peer reports none
DEFAULT_FORWARDER_PORT = 51821
#: reaching the agent across the tunnel; a live tunnel answers in milliseconds
TUNNEL_CONNECT_TIMEOUT_S = 5.0
#: the agent resolves and dials the target before it answers: its own connect timeout, plus slack
ANSWER_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class StreamTarget:
    """Where a stream goes: the agent (overlay address, forwarder port) and what it dials."""

    peer_overlay_address: str
    host: str  # the address the agent dials; empty: the peer itself (127.0.0.1)
    port: int
    protocol: Protocol = Protocol.TCP
    forwarder_port: int = DEFAULT_FORWARDER_PORT
    service_id: str = ""


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
    request = ForwardRequest(
        protocol=target.protocol,
        target_host=target.host or "127.0.0.1",
        target_port=target.port,
        client_ip=client[0],
        client_port=client[1],
        service_id=target.service_id,
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(0.0)  # non-blocking
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        delay_acks(sock)  # the handshake's last ACK rides on the header
        try:
            await connect(
                loop, sock, (target.peer_overlay_address, target.forwarder_port), connect_timeout_s
            )
        except TimeoutError:
            raise TunnelError(
                ForwardStatus.CONNECT_TIMEOUT,
                f"the agent at {_agent(target)} did not answer within {connect_timeout_s:g} s "
                "(is the peer's tunnel up?)",
            ) from None
        except OSError as exc:
            raise TunnelError(
                ForwardStatus.UNREACHABLE,
                f"cannot reach the agent at {_agent(target)}: {exc.strerror or exc}",
            ) from None
        delay_acks(sock)  # the answer and the first bytes need no ACK of their own
        try:
            header = encode_request(request)
            if sock.send(header) < len(header):  # an empty send buffer takes it whole
                raise OSError(errno.EIO, "the forward request did not fit in the send buffer")
            response = await read_response_from_socket(loop, sock, answer_timeout_s)
        except HeaderError as exc:
            raise TunnelError(exc.status, f"the agent at {_agent(target)}: {exc.message}") from None
        except OSError as exc:
            raise TunnelError(
                ForwardStatus.UNREACHABLE,
                f"the agent at {_agent(target)} dropped the stream: {exc}",
            ) from None
        if not response.ok:
            raise TunnelError(response.status, response.message or response.status.name)
    except BaseException:
        sock.close()
        raise
    return sock


def _agent(target: StreamTarget) -> str:
    return f"{target.peer_overlay_address}:{target.forwarder_port}"
