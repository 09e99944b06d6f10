"""The generated service code carries a real bidi ``Sync`` stream: Hello → ConfigBatch → Ack.

A grpc.aio server and client in this process, on 127.0.0.1 and a port the OS picks.
"""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import grpc
import pytest_asyncio

from heron_proto.heron.v1.proxy_pb2 import (
    CHANGE_TYPE_CREATED,
    SERVICE_MODE_HTTP,
    TARGET_PROTOCOL_HTTP,
    TARGET_TYPE_PEER,
    Ack,
    ConfigBatch,
    EdgeCapabilities,
    EdgeMessage,
    Hello,
    ManagementMessage,
    ServiceMapping,
    Target,
)
from heron_proto.heron.v1.proxy_pb2_grpc import (
    ProxyServiceServicer,
    ProxyServiceStub,
    add_ProxyServiceServicer_to_server,
)

TIMEOUT_S = 10.0
MAPPING = ServiceMapping(
    change_type=CHANGE_TYPE_CREATED,
    id="svc_01",
    account_id="acc_01",
    domain="app.proxy.example.com",
    mode=SERVICE_MODE_HTTP,
    enabled=True,
    targets=[
        Target(
            id="tgt_01",
            target_type=TARGET_TYPE_PEER,
            target_id="peer_01",
            peer_overlay_address="100.64.0.7",
            port=8080,
            protocol=TARGET_PROTOCOL_HTTP,
            path="/",
            enabled=True,
        )
    ],
)


@dataclass
class Management(ProxyServiceServicer):
    """Just enough of management: wait for Hello, send a one-batch snapshot, wait for its Ack."""

    received: list[EdgeMessage] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)

    async def Sync(  # noqa: N802  # the RPC's name in the .proto
        self,
        request_iterator: AsyncIterator[EdgeMessage],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[ManagementMessage]:
        self.metadata = dict(context.invocation_metadata())
        self.received.append(await anext(request_iterator))
        yield ManagementMessage(
            config_batch=ConfigBatch(sequence=1, snapshot_complete=True, mappings=[MAPPING])
        )
        async for message in request_iterator:
            self.received.append(message)


@dataclass
class Running:
    management: Management
    address: str


@pytest_asyncio.fixture
async def server() -> AsyncIterator[Running]:
    management = Management()
    grpc_server = grpc.aio.server()
    add_ProxyServiceServicer_to_server(management, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    assert port > 0
    await grpc_server.start()
    try:
        yield Running(management, f"127.0.0.1:{port}")
    finally:
        await grpc_server.stop(grace=None)


async def test_hello_config_batch_ack(server: Running) -> None:
    hello = Hello(
        instance_id="edge-test",
        proxy_domain="proxy.example.com",
        version="0.1.0",
        wireguard_public_key="yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=",
        wireguard_endpoint="198.51.100.4:51820",
        capabilities=EdgeCapabilities(supports_custom_ports=True),
    )
    async with asyncio.timeout(TIMEOUT_S), grpc.aio.insecure_channel(server.address) as channel:
        stub = ProxyServiceStub(channel)
        call = stub.Sync(metadata=(("authorization", "Bearer test-token"),))

        await call.write(EdgeMessage(hello=hello))
        reply = await call.read()
        assert isinstance(reply, ManagementMessage)
        batch = reply.config_batch
        await call.write(EdgeMessage(ack=Ack(sequence=batch.sequence)))
        await call.done_writing()

        assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK

    assert reply.WhichOneof("message") == "config_batch"
    assert batch.snapshot_complete
    assert list(batch.mappings) == [MAPPING]
    assert [m.WhichOneof("message") for m in server.management.received] == ["hello", "ack"]
    assert server.management.received[0].hello == hello
    assert server.management.received[1].ack.sequence == 1
    assert server.management.metadata["authorization"] == "Bearer test-token"
