"""The grpc.aio server: both services on ``HERON_MANAGEMENT_GRPC_HOST:PORT``.

Shutdown stops accepting calls, ends every open stream with UNAVAILABLE (clients reconnect,
to another replica or to this one once it is back), and cancels what is left after the grace.
"""

from typing import Any

import grpc

from heron_core.errors import ConfigError
from heron_core.tasks import spawn
from heron_management.errors import UnavailableError
from heron_management.grpc.agent_service import AgentServicer
from heron_management.grpc.deps import StreamDeps
from heron_management.grpc.proxy_service import ProxyServicer
from heron_proto.heron.v1 import agent_pb2_grpc, proxy_pb2_grpc

SHUTDOWN_GRACE_S = 5.0
_OPTIONS = (
    # agents and edges ping every 20-30 s, also between streams: allow it
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
    ("grpc.http2.max_ping_strikes", 0),
    # and ping them, so a vanished client's stream ends within a minute
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)


class GrpcServer:
    def __init__(self, host: str, port: int, deps: StreamDeps) -> None:
        self._deps = deps
        self._server: Any = grpc.aio.server(options=_OPTIONS)
        agent_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(deps), self._server)
        proxy_pb2_grpc.add_ProxyServiceServicer_to_server(ProxyServicer(deps), self._server)
        self.address = f"{host}:{port}"
        try:
            bound = self._server.add_insecure_port(self.address)
        except RuntimeError as exc:
            raise ConfigError(f"gRPC cannot listen on {self.address!r}: {exc}") from exc
        if not bound:
            raise ConfigError(f"gRPC cannot listen on {self.address!r}")

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        stopping = spawn(self._server.stop(grace_s), name="grpc-stop")  # refuses new calls now
        self._deps.registry.stop_all(UnavailableError("management is shutting down: reconnect"))
        await stopping
