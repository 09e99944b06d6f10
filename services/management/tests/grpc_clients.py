"""Real gRPC clients for management's tests: an agent's and an edge's side of the streams.

They speak to the ``api`` fixture's gRPC port with grpc.aio, exactly as ``heron up`` and an edge
do; every read waits a bounded time, so a missing message fails the test instead of hanging it.
"""

import asyncio
import base64
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Self

from grpc import aio

from heron_proto.heron.v1 import agent_pb2, agent_pb2_grpc, proxy_pb2, proxy_pb2_grpc

READ_TIMEOUT_S = 10.0


def wireguard_key() -> str:
    """A WireGuard public key as ``wg pubkey`` prints it (any 32 bytes will do here)."""
    return base64.b64encode(os.urandom(32)).decode()


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


class Management:
    """One channel to management's gRPC port, with both services' stubs."""

    def __init__(self, target: str) -> None:
        self.channel = aio.insecure_channel(target)
        self.agents = agent_pb2_grpc.AgentServiceStub(self.channel)
        self.proxy = proxy_pb2_grpc.ProxyServiceStub(self.channel)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.channel.close(grace=None)

    async def login(
        self,
        *,
        setup_key: str = "",
        key: str | None = None,
        hostname: str = "host",
        peer_token: str | None = None,
    ) -> agent_pb2.LoginResponse:
        request = agent_pb2.LoginRequest(
            setup_key=setup_key,
            wireguard_public_key=key or wireguard_key(),
            hostname=hostname,
            version="0.1.0-test",
        )
        metadata = bearer(peer_token) if peer_token else None
        response: agent_pb2.LoginResponse = await self.agents.Login(
            request, metadata=metadata, timeout=READ_TIMEOUT_S
        )
        return response

    def agent_sync(
        self, peer_token: str, *, forwarder_port: int = 0, hello: bool = True
    ) -> "Stream":
        first = agent_pb2.AgentMessage(
            hello=agent_pb2.AgentHello(version="0.1.0-test", forwarder_port=forwarder_port)
        )
        return Stream(self.agents.Sync, bearer(peer_token), first if hello else None)

    def edge_sync(
        self,
        proxy_token: str,
        *,
        instance_id: str | None = None,
        key: str | None = None,
        first: proxy_pb2.EdgeMessage | None = None,
        proxy_domain: str = "proxy.example.test",
        capabilities: proxy_pb2.EdgeCapabilities | None = None,
    ) -> "Stream":
        """An edge's config stream; ``capabilities`` default to custom ports (as an edge's
        settings do)."""
        if capabilities is None:
            capabilities = proxy_pb2.EdgeCapabilities(supports_custom_ports=True)
        hello = proxy_pb2.EdgeMessage(
            hello=proxy_pb2.Hello(
                instance_id=instance_id or f"edge-{secrets.token_hex(4)}",
                proxy_domain=proxy_domain,
                version="0.1.0-test",
                wireguard_public_key=key or wireguard_key(),
                wireguard_endpoint="203.0.113.7:51820",
                capabilities=capabilities,
            )
        )
        return Stream(self.proxy.Sync, bearer(proxy_token), first or hello)


class Stream:
    """A bidirectional stream: ``send`` queues a message, ``read`` waits for the next one.

    A task reads the call into a queue, so that a read that times out does not cancel the call.
    """

    def __init__(self, method: Any, metadata: Any, first: Any | None) -> None:
        self._outgoing: asyncio.Queue[Any] = asyncio.Queue()
        if first is not None:
            self._outgoing.put_nowait(first)
        self.call = method(self._requests(), metadata=metadata)
        self._incoming: asyncio.Queue[Any] = asyncio.Queue()
        self._reader = asyncio.get_running_loop().create_task(self._read_all())

    async def _requests(self) -> AsyncIterator[Any]:
        while (message := await self._outgoing.get()) is not None:
            yield message

    async def _read_all(self) -> None:
        try:
            while (message := await self.call.read()) is not aio.EOF:
                self._incoming.put_nowait(message)
            self._incoming.put_nowait(aio.EOF)
        except aio.AioRpcError as exc:
            self._incoming.put_nowait(exc)

    def send(self, message: Any) -> None:
        self._outgoing.put_nowait(message)

    async def read(self, timeout_s: float = READ_TIMEOUT_S) -> Any:
        item = await asyncio.wait_for(self._incoming.get(), timeout_s)
        if isinstance(item, aio.AioRpcError):
            raise AssertionError(f"the stream failed: {item.code()} {item.details()}") from item
        assert item is not aio.EOF, "the stream ended"
        return item

    async def nothing_within(self, seconds: float) -> bool:
        """True when no message arrives within ``seconds``."""
        try:
            item = await asyncio.wait_for(self._incoming.get(), seconds)
        except TimeoutError:
            return True
        self._incoming.put_nowait(item)  # not ours to drop (order no longer matters: it failed)
        return False

    async def error(self, timeout_s: float = READ_TIMEOUT_S) -> aio.AioRpcError:
        """The status the stream ends with (skipping any messages still coming)."""
        async with asyncio.timeout(timeout_s):
            while True:
                item = await self._incoming.get()
                if isinstance(item, aio.AioRpcError):
                    return item
                if item is aio.EOF:
                    raise AssertionError(f"the stream ended with {await self.call.code()}")

    def close(self) -> None:
        self._outgoing.put_nowait(None)
        self.call.cancel()
        self._reader.cancel()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@asynccontextmanager
async def registered_edge(
    management: Management,
    proxy_token: str,
    proxy_domain: str,
    *,
    custom_ports: bool = True,
    instance_id: str | None = None,
) -> AsyncIterator[Stream]:
    """An edge of cluster ``proxy_domain`` whose stream stays open: registered (management has
    sent its ``EdgeSetup``) when the block starts, disconnected when it ends."""
    capabilities = proxy_pb2.EdgeCapabilities(supports_custom_ports=custom_ports)
    async with management.edge_sync(
        proxy_token, proxy_domain=proxy_domain, capabilities=capabilities, instance_id=instance_id
    ) as edge:
        assert (await edge.read()).HasField("edge_setup")
        yield edge


def ack(sequence: int) -> proxy_pb2.EdgeMessage:
    return proxy_pb2.EdgeMessage(ack=proxy_pb2.Ack(sequence=sequence))


def service_status(
    service_id: str,
    *,
    tunnel_up: bool,
    certificate_available: bool = False,
    error_message: str = "",
) -> proxy_pb2.EdgeMessage:
    status = proxy_pb2.ServiceStatus(
        service_id=service_id,
        tunnel_up=tunnel_up,
        certificate_available=certificate_available,
        error_message=error_message,
    )
    return proxy_pb2.EdgeMessage(service_status=status)


def agent_ack(sequence: int) -> agent_pb2.AgentMessage:
    return agent_pb2.AgentMessage(ack=agent_pb2.AgentAck(sequence=sequence))
