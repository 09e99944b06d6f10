"""``AgentService``: agents log in and follow their peer's config on a sync stream.

A stream is authenticated by the peer token, begins with the agent's ``AgentHello``, and then
gets a complete ``PeerConfig`` (snapshot first) whenever the account's edges or the peer's
allowed targets change. It ends when the peer is deleted, logs in again (its token is replaced)
or opens a newer stream; while it is open the peer counts as connected.
"""

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import structlog

from heron_core.tasks import spawn
from heron_management import agents
from heron_management.db.tables import PeerRow
from heron_management.domain.api_tokens import token_hash
from heron_management.domain.presence import HEARTBEAT_S
from heron_management.errors import (
    AuthenticationError,
    ManagementError,
    ProtocolError,
)
from heron_management.grpc import convert
from heron_management.grpc.call_context import abort, bearer_token
from heron_management.grpc.deps import StreamDeps
from heron_management.grpc.streams import (
    Changed,
    Closed,
    Inbox,
    Received,
    Stop,
    first_message,
    pump,
)
from heron_management.tunnel_views import PeerConfig
from heron_proto.heron.v1 import agent_pb2, agent_pb2_grpc

log = structlog.get_logger(__name__)

HELLO_TIMEOUT_S = 30.0  # an agent sends its hello at once; a silent client holds a slot


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(self, deps: StreamDeps) -> None:
        self._deps = deps

    async def Login(  # noqa: N802  (the gRPC method's name)
        self, request: agent_pb2.LoginRequest, context: Any
    ) -> agent_pb2.LoginResponse:
        login = convert.login_request(request, bearer_token(context))
        try:
            result = await agents.login(self._deps.sessions, login, self._deps.rng)
        except ManagementError as exc:
            log.info("login refused", hostname=login.hostname, reason=str(exc))
            await abort(context, exc)
        log.info(
            "peer logged in",
            peer_id=result.peer_id,
            overlay_address=result.overlay_address,
            created=result.created,
        )
        return convert.login_response(result)

    async def Sync(  # noqa: N802
        self, request_iterator: AsyncIterator[agent_pb2.AgentMessage], context: Any
    ) -> AsyncIterator[agent_pb2.PeerConfig]:
        try:
            async for config in _AgentStream(self._deps).run(request_iterator, context):
                yield config
        except ManagementError as exc:
            await abort(context, exc)


class _AgentStream:
    def __init__(self, deps: StreamDeps) -> None:
        self._deps = deps
        self._inbox = Inbox()
        self._last_acked = 0
        #: the agent's last AgentStatus: handshake age per edge key (-1: none yet)
        self.handshake_ages: dict[str, int] = {}

    async def run(
        self, requests: AsyncIterator[agent_pb2.AgentMessage], context: Any
    ) -> AsyncIterator[agent_pb2.PeerConfig]:
        # Read the first message before judging the credentials: aborting while the client is
        # still sending it makes its gRPC library report INTERNAL instead of our status.
        first = await first_message(requests, HELLO_TIMEOUT_S)
        if first is None:
            return
        token = bearer_token(context)
        if token is None:
            raise AuthenticationError("send the peer token as 'authorization: Bearer <token>'")
        async with self._deps.sessions() as session:
            peer = await agents.authenticate_peer(session, token)
        if (kind := convert.agent_message_kind(first)) != "hello":
            raise ProtocolError(f"the first message of a sync stream must be a hello, not {kind!r}")
        hello = convert.agent_hello(first)
        stop_listening = self._deps.feed.listen(peer.account_id, self._inbox.changed)
        self._deps.registry.add(self._inbox)
        reader = spawn(pump(requests, self._inbox), name=f"agent-sync-reader {peer.id}")
        stream_session: str | None = None
        try:
            async with self._deps.sessions() as session:
                peer = await agents.authenticate_peer(session, token)
                stream_session = await agents.open_stream(session, peer, hello)
            log.info(
                "agent stream opened", peer_id=peer.id, version=hello.version,
                forwarder_port=hello.forwarder_port,
            )  # fmt: skip
            async for config in self._follow(peer.id, token_hash(token), stream_session):
                yield config
        finally:
            reader.cancel()
            stop_listening()
            self._deps.registry.discard(self._inbox)
            if stream_session is not None:
                await asyncio.shield(self._close(peer.id, stream_session))

    async def _follow(
        self, peer_id: str, digest: str, stream_session: str
    ) -> AsyncIterator[agent_pb2.PeerConfig]:
        sequence = 1
        last = await self._config(peer_id, digest, stream_session)
        yield convert.peer_config(last, sequence=sequence, snapshot=True)
        heartbeat_at = time.monotonic() + HEARTBEAT_S
        while True:
            signals = await self._inbox.next_all(heartbeat_at - time.monotonic())
            changed = not signals
            if not signals:  # a heartbeat: refresh last_seen, and look again in case NATS missed
                async with self._deps.sessions() as session:
                    await agents.touch_stream(session, peer_id, stream_session)
                heartbeat_at = time.monotonic() + HEARTBEAT_S
            for signal in signals:
                match signal:
                    case Received(message):
                        self._handle(peer_id, message)
                    case Changed():
                        changed = True
                    case Closed():
                        return
                    case Stop(error):
                        raise error
            if changed:
                config = await self._config(peer_id, digest, stream_session)
                if config != last:
                    sequence += 1
                    last = config
                    yield convert.peer_config(config, sequence=sequence, snapshot=False)

    def _handle(self, peer_id: str, message: agent_pb2.AgentMessage) -> None:
        kind = convert.agent_message_kind(message)
        if kind == "ack":
            self._last_acked = message.ack.sequence
        elif kind == "status":
            self.handshake_ages = convert.edge_handshake_ages(message)
            log.debug("agent status", peer_id=peer_id, handshake_ages=self.handshake_ages)
        elif kind == "hello":
            raise ProtocolError("a hello is only the first message of a sync stream")

    async def _config(self, peer_id: str, digest: str, stream_session: str) -> PeerConfig:
        async with self._deps.sessions() as session:
            problem = await agents.stream_problem(session, peer_id, digest, stream_session)
            if problem is not None:
                raise problem
            peer = await session.get(PeerRow, peer_id)
            if peer is None:  # deleted between the two reads
                raise AuthenticationError("the peer was deleted")
            return await agents.peer_config(session, peer)

    async def _close(self, peer_id: str, stream_session: str) -> None:
        try:
            async with self._deps.sessions() as session:
                await agents.close_stream(session, peer_id, stream_session)
        except Exception as exc:  # noqa: BLE001  (the database may be gone at shutdown)
            log.warning("agent stream state not saved", peer_id=peer_id, error=str(exc))
        log.info("agent stream closed", peer_id=peer_id, last_acked=self._last_acked)
