"""The agent's gRPC client for management's ``AgentService``; the only module that sees protobuf.

``login`` turns a setup key (or the stored peer token) and the WireGuard public key into a
``Login``; ``SyncStream`` carries the long-lived config stream: ``PeerConfig`` in, hello, acks and
tunnel status out. gRPC status codes become ``ManagementError`` with ``retryable`` telling the
caller whether to try again (management away) or to stop (a refused key).
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import grpc
from grpc import aio

from heron_agent.allowed import AllowedTarget
from heron_agent.state import Login
from heron_core.errors import HeronError
from heron_proto.channel import open_channel
from heron_proto.heron.v1 import agent_pb2
from heron_proto.heron.v1.agent_pb2_grpc import AgentServiceStub
from heron_tunnel.header import Protocol

LOGIN_TIMEOUT_S = 15.0
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.CANCELLED,
    }
)
_PROTOCOLS = {
    agent_pb2.FORWARD_PROTOCOL_TCP: Protocol.TCP,
    agent_pb2.FORWARD_PROTOCOL_UDP: Protocol.UDP,
}


class ManagementError(HeronError):
    """Management refused or could not be reached; ``retryable`` says whether to try again."""

    def __init__(self, message: str, *, retryable: bool, code: str = "") -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code


@dataclass(frozen=True)
class EdgePeer:
    public_key: str
    endpoint: str
    overlay_address: str


@dataclass(frozen=True)
class PeerConfig:
    sequence: int
    snapshot: bool
    edges: tuple[EdgePeer, ...]
    allowed_targets: tuple[AllowedTarget, ...]


class ManagementClient:
    """One channel to management; an async context manager."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._channel = open_channel(url)
        self._stub = AgentServiceStub(self._channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close(grace=None)

    async def login(
        self,
        *,
        public_key: str,
        hostname: str,
        version: str,
        setup_key: str | None = None,
        peer_token: str | None = None,
    ) -> Login:
        request = agent_pb2.LoginRequest(
            setup_key=setup_key or "",
            wireguard_public_key=public_key,
            hostname=hostname,
            version=version,
        )
        metadata = _bearer(peer_token) if peer_token and not setup_key else None
        try:
            response = await self._stub.Login(request, timeout=LOGIN_TIMEOUT_S, metadata=metadata)
        except aio.AioRpcError as exc:
            raise _error("login", self.url, exc) from None
        return Login(
            management_url=self.url,
            peer_id=response.peer_id,
            overlay_address=response.overlay_address,
            overlay_network=response.overlay_network,
            peer_token=response.peer_token,
        )

    def sync(self, peer_token: str, *, version: str, forwarder_port: int) -> "SyncStream":
        return SyncStream(self._stub, self.url, peer_token, version, forwarder_port)


class SyncStream:
    """The config stream: iterate it for ``PeerConfig``s; ``ack`` and ``report`` as they apply."""

    def __init__(
        self, stub: AgentServiceStub, url: str, token: str, version: str, forwarder_port: int
    ) -> None:
        self._url = url
        self._outgoing: asyncio.Queue[agent_pb2.AgentMessage | None] = asyncio.Queue()
        hello = agent_pb2.AgentHello(version=version, forwarder_port=forwarder_port)
        self._outgoing.put_nowait(agent_pb2.AgentMessage(hello=hello))
        self._call = stub.Sync(self._requests(), metadata=_bearer(token))

    async def _requests(self) -> AsyncIterator[agent_pb2.AgentMessage]:
        while (message := await self._outgoing.get()) is not None:
            yield message

    async def configs(self) -> AsyncIterator[PeerConfig]:
        try:
            async for message in self._call:
                yield _peer_config(message)
        except aio.AioRpcError as exc:
            raise _error("sync", self._url, exc) from None
        raise ManagementError(f"management at {self._url} ended the sync stream", retryable=True)

    def ack(self, sequence: int) -> None:
        self._outgoing.put_nowait(agent_pb2.AgentMessage(ack=agent_pb2.AgentAck(sequence=sequence)))

    def report(self, handshake_ages: Sequence[tuple[str, float | None]]) -> None:
        edges = [
            agent_pb2.EdgeTunnelState(
                wireguard_public_key=key, handshake_age_s=-1 if age is None else int(age)
            )
            for key, age in handshake_ages
        ]
        status = agent_pb2.AgentStatus(edges=edges)
        self._outgoing.put_nowait(agent_pb2.AgentMessage(status=status))

    def close(self) -> None:
        self._outgoing.put_nowait(None)
        with contextlib.suppress(Exception):
            self._call.cancel()


def _bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _peer_config(message: agent_pb2.PeerConfig) -> PeerConfig:
    edges = tuple(
        EdgePeer(e.wireguard_public_key, e.endpoint, e.overlay_address) for e in message.edges
    )
    allowed = tuple(
        AllowedTarget.of(t.host, t.port, _PROTOCOLS[t.protocol])
        for t in message.allowed_targets
        if t.protocol in _PROTOCOLS and 0 < t.port < 65536 and t.host
    )
    return PeerConfig(message.sequence, message.snapshot, edges, allowed)


def _error(doing: str, url: str, exc: aio.AioRpcError) -> ManagementError:
    code = exc.code()
    details = exc.details() or code.name.lower()
    if code is grpc.StatusCode.UNAVAILABLE:
        message = f"{doing}: management at {url} is unreachable ({details})"
    else:
        message = f"{doing} refused by management at {url}: {details}"
    return ManagementError(message, retryable=code in _RETRYABLE, code=code.name)
