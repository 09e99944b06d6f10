"""``ProxyService``: an edge's config stream.

After the edge's ``Hello`` (anything else first: FAILED_PRECONDITION) management registers the
instance and sends ``EdgeSetup``, ``TunnelPeers`` and the snapshot of the account's enabled
services that its cluster serves (``edges.edge_services``) in ``ConfigBatch``es of at most
``snapshot_batch_size``. Every batch, the snapshot's and later ones alike, waits for the ack of
the one before, so changes that arrive meanwhile are folded into the next batch (always
complete mappings: CREATED, MODIFIED or REMOVED against what this stream sent). ``TunnelPeers``
goes out, complete, whenever it changes. A batch not acknowledged within ``ACK_TIMEOUT_S`` ends
the stream; the edge reconnects and resyncs.

The edge's ``ServiceStatus`` reports go to ``service_status`` (stored, statuses derived), those
that arrived together in one transaction, and only those that differ from the last one stored
for the service. The stream's opening and end, and a heartbeat that finds the account's live
edges changed, derive the account's statuses again.
"""

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import Any

import structlog

from heron_core.tasks import spawn
from heron_management import edges, proxy_tokens, service_status
from heron_management.domain.presence import HEARTBEAT_S
from heron_management.edges import EdgeRegistration
from heron_management.errors import (
    AckTimeoutError,
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
    Signal,
    Stop,
    first_message,
    pump,
)
from heron_management.service_status import ReportingStream, ServiceReport
from heron_management.tunnel_views import EdgeService, TunnelPeer
from heron_proto.heron.v1 import proxy_pb2, proxy_pb2_grpc

log = structlog.get_logger(__name__)

HELLO_TIMEOUT_S = 30.0
ACK_TIMEOUT_S = 120.0  # NetBird's edge gives a batch 2 min; a stuck edge gets a fresh start
#: a snapshot's worth of reports arrives at once; a transaction each this many keeps them short
REPORTS_PER_TRANSACTION = 500

Batch = tuple[list[proxy_pb2.ServiceMapping], bool]  # mappings, snapshot_complete


class ProxyServicer(proxy_pb2_grpc.ProxyServiceServicer):
    def __init__(self, deps: StreamDeps) -> None:
        self._deps = deps

    async def Sync(  # noqa: N802  (the gRPC method's name)
        self, request_iterator: AsyncIterator[proxy_pb2.EdgeMessage], context: Any
    ) -> AsyncIterator[proxy_pb2.ManagementMessage]:
        try:
            async for message in _EdgeStream(self._deps).run(request_iterator, context):
                yield message
        except ManagementError as exc:
            await abort(context, exc)


class _SentMappings:
    """What this stream has told its edge, to turn fresh views into changes."""

    def __init__(self, account_id: str) -> None:
        self._account_id = account_id
        self._sent: dict[str, tuple[bytes, str]] = {}  # service id → (content, domain)

    def changes(self, views: Sequence[EdgeService]) -> list[proxy_pb2.ServiceMapping]:
        changes = []
        current: set[str] = set()
        for view in views:
            service_id = view.service.id
            current.add(service_id)
            mapping = convert.service_mapping(view)
            content = mapping.SerializeToString(deterministic=True)
            before = self._sent.get(service_id)
            if before is not None and before[0] == content:
                continue
            change = convert.CREATED if before is None else convert.MODIFIED
            changes.append(convert.with_change(mapping, change))
            self._sent[service_id] = (content, view.service.domain)
        for gone in sorted(set(self._sent) - current):
            _, domain = self._sent.pop(gone)
            changes.append(convert.removed_mapping(gone, self._account_id, domain))
        return changes


class _ClientClosed(Exception):  # noqa: N818  (not an error: the edge finished its side)
    """The edge closed its side of the stream."""


class _BatchQueue:
    """Config batches waiting to go out, one at a time: each after the ack of the one before."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._pending: deque[Batch] = deque()
        self.sequence = 0  # the last batch sent
        self._outstanding = 0  # the batch waiting for its ack; 0: none
        self._sent_at = 0.0

    @property
    def idle(self) -> bool:
        """Nothing waiting to go out and no ack awaited: time to look for changes."""
        return not self._outstanding and not self._pending

    def add(self, mappings: list[proxy_pb2.ServiceMapping], *, snapshot: bool) -> None:
        """Queue ``mappings`` in batches; a snapshot is at least one (possibly empty) batch."""
        if not mappings and not snapshot:
            return
        size = self._size
        chunks = [mappings[i : i + size] for i in range(0, len(mappings), size)] or [[]]
        for index, chunk in enumerate(chunks):
            self._pending.append((chunk, snapshot and index == len(chunks) - 1))

    def next_batch(self) -> proxy_pb2.ManagementMessage | None:
        if self._outstanding or not self._pending:
            return None
        mappings, complete = self._pending.popleft()
        self.sequence += 1
        self._outstanding, self._sent_at = self.sequence, time.monotonic()
        return convert.config_batch(self.sequence, mappings, snapshot_complete=complete)

    def acked(self, sequence: int) -> None:
        if sequence and sequence == self._outstanding:
            self._outstanding = 0

    def deadline(self, heartbeat_at: float) -> float:
        if not self._outstanding:
            return heartbeat_at
        return min(heartbeat_at, self._sent_at + ACK_TIMEOUT_S)

    def check_overdue(self, now: float) -> None:
        if self._outstanding and now - self._sent_at >= ACK_TIMEOUT_S:
            raise AckTimeoutError(
                f"batch {self._outstanding} was not acknowledged within {ACK_TIMEOUT_S:g} s"
            )


class _EdgeStream:
    def __init__(self, deps: StreamDeps) -> None:
        self._deps = deps
        self._inbox = Inbox()
        #: the edge's last stored ServiceStatus per service
        self._reported: dict[str, ServiceReport] = {}
        #: the account's live edges when statuses were last derived for all its services
        self._live_edges: frozenset[str] = frozenset()

    async def run(
        self, requests: AsyncIterator[proxy_pb2.EdgeMessage], context: Any
    ) -> AsyncIterator[proxy_pb2.ManagementMessage]:
        # Read the first message before judging the credentials: aborting while the client is
        # still sending it makes its gRPC library report INTERNAL instead of our status.
        first = await first_message(requests, HELLO_TIMEOUT_S)
        if first is None:
            return
        token = bearer_token(context)
        if token is None:
            raise AuthenticationError("send the proxy token as 'authorization: Bearer <token>'")
        async with self._deps.sessions() as session:
            token_row = await proxy_tokens.authenticate_edge(session, token)
        if (kind := convert.edge_message_kind(first)) != "hello":
            raise ProtocolError(
                f"the first message of a config stream must be a hello, not {kind!r}"
            )
        hello = edges.check_hello(convert.edge_hello(first))
        stop_listening = self._deps.feed.listen(token_row.account_id, self._inbox.changed)
        self._deps.registry.add(self._inbox)
        reader = spawn(pump(requests, self._inbox), name=f"edge-sync-reader {hello.instance_id}")
        edge: EdgeRegistration | None = None
        try:
            edge = await edges.register_edge(self._deps.sessions, token_row, hello, self._deps.rng)
            await self._derive_all(edge)
            log.info(
                "edge stream opened", edge_id=edge.edge_id, instance_id=edge.instance_id,
                proxy_domain=edge.proxy_domain, overlay_address=edge.overlay_address,
                version=hello.version,
            )  # fmt: skip
            async for message in self._follow(edge):
                yield message
        except _ClientClosed:
            return
        finally:
            reader.cancel()
            stop_listening()
            self._deps.registry.discard(self._inbox)
            if edge is not None:
                await asyncio.shield(self._close(edge))

    async def _follow(self, edge: EdgeRegistration) -> AsyncIterator[proxy_pb2.ManagementMessage]:
        yield convert.edge_setup(edge.overlay_address)
        peers = await self._tunnel_peers(edge)
        yield convert.tunnel_peers(peers)
        sent = _SentMappings(edge.account_id)
        batches = _BatchQueue(self._deps.snapshot_batch_size)
        batches.add(sent.changes(await self._services(edge)), snapshot=True)
        mappings_dirty = False
        heartbeat_at = time.monotonic() + HEARTBEAT_S
        while True:
            if mappings_dirty and batches.idle:
                mappings_dirty = False
                batches.add(sent.changes(await self._services(edge)), snapshot=False)
            if (batch := batches.next_batch()) is not None:
                yield batch
            signals = await self._inbox.next_all(batches.deadline(heartbeat_at) - time.monotonic())
            changed, reports = self._absorb(signals, batches)
            if reports:
                await self._record(edge, reports)
            now = time.monotonic()
            batches.check_overdue(now)
            if now >= heartbeat_at:  # refresh last_seen, and look again in case NATS missed
                async with self._deps.sessions() as session:
                    await edges.touch_stream(session, edge)
                    live = await service_status.live_edge_ids(session, edge.account_id)
                if live != self._live_edges:  # e.g. an edge of a replica that died aged out
                    await self._derive_all(edge)
                heartbeat_at = now + HEARTBEAT_S
                changed = True
            if changed:
                await self._check(edge)
                fresh = await self._tunnel_peers(edge)
                if fresh != peers:
                    peers = fresh
                    yield convert.tunnel_peers(peers)
                mappings_dirty = True

    def _absorb(
        self, signals: list[Signal], batches: "_BatchQueue"
    ) -> tuple[bool, dict[str, ServiceReport]]:
        """Handle the inbox's signals: whether any was a change, and the new reports by service.
        Raises to end the stream."""
        changed = False
        reports: dict[str, ServiceReport] = {}
        for signal in signals:
            match signal:
                case Received(message):
                    report = self._read(message, batches)
                    if report is not None and self._reported.get(report.service_id) != report:
                        reports[report.service_id] = report
                case Changed():
                    changed = True
                case Closed():
                    raise _ClientClosed
                case Stop(error):
                    raise error
        return changed, reports

    def _read(self, message: proxy_pb2.EdgeMessage, batches: "_BatchQueue") -> ServiceReport | None:
        """Handle one message of the edge: an ack is applied, a report returned."""
        kind = convert.edge_message_kind(message)
        if kind == "ack":
            acked, sent = convert.ack_sequence(message), batches.sequence
            if acked > sent:
                raise ProtocolError(f"ack for batch {acked}, but only {sent} were sent")
            batches.acked(acked)
        elif kind == "service_status":
            return convert.service_report(message)
        elif kind == "hello":
            raise ProtocolError("a hello is only the first message of a config stream")
        return None

    async def _record(self, edge: EdgeRegistration, reports: dict[str, ServiceReport]) -> None:
        stream = ReportingStream(edge.edge_id, edge.account_id, edge.stream_session)
        pending = list(reports.values())
        stored: list[ServiceReport] = []
        for start in range(0, len(pending), REPORTS_PER_TRANSACTION):
            chunk = pending[start : start + REPORTS_PER_TRANSACTION]
            stored += await service_status.record_reports(self._deps.sessions, stream, chunk)
        for report in stored:
            self._reported[report.service_id] = report
            log.debug(
                "service status at edge", edge_id=edge.edge_id, service_id=report.service_id,
                tunnel_up=report.tunnel_up, certificate=report.certificate_available,
                error=report.error_message or None,
            )  # fmt: skip

    async def _derive_all(self, edge: EdgeRegistration) -> None:
        self._live_edges = await service_status.refresh_account(
            self._deps.sessions, edge.account_id
        )

    async def _check(self, edge: EdgeRegistration) -> None:
        async with self._deps.sessions() as session:
            problem = await edges.stream_problem(session, edge)
        if problem is not None:
            raise problem

    async def _tunnel_peers(self, edge: EdgeRegistration) -> tuple[TunnelPeer, ...]:
        async with self._deps.sessions() as session:
            return await edges.tunnel_peers(session, edge.account_id)

    async def _services(self, edge: EdgeRegistration) -> list[EdgeService]:
        async with self._deps.sessions() as session:
            return await edges.edge_services(session, edge.account_id, edge.proxy_domain)

    async def _close(self, edge: EdgeRegistration) -> None:
        try:
            async with self._deps.sessions() as session:
                await edges.close_stream(session, edge)
            await service_status.refresh_account(self._deps.sessions, edge.account_id)
        except Exception as exc:  # noqa: BLE001  (the database may be gone at shutdown)
            log.warning("edge stream state not saved", edge_id=edge.edge_id, error=str(exc))
        log.info("edge stream closed", edge_id=edge.edge_id, instance_id=edge.instance_id)
