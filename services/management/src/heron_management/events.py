"""The transactional outbox: events are written with the change that causes them, then published.

A change and its event commit together or not at all; the relay publishes outbox rows to NATS in
order, with the event id as ``Nats-Msg-Id`` so JetStream drops a re-publish after a crash, and
deletes them once acknowledged. NATS being down delays events; it never fails an API call.

``deliver_after_commit`` also hands each committed event to this process at once (the relay's
wake-up and the gRPC streams' change feed), so one replica needs no round trip through NATS.
"""

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import structlog
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, delete, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_bus import subject_for
from heron_core.events import Event
from heron_core.tasks import stop_if_cancelled
from heron_management.db.tables import OutboxRow

log = structlog.get_logger(__name__)

RELAY_BATCH = 100
RELAY_POLL_S = 2.0  # a safety net: another replica's rows, or a missed wake-up
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 15.0


class EventPublisher(Protocol):
    async def publish_serialized(self, subject: str, payload: bytes, *, msg_id: str) -> None: ...


_PENDING = "heron_pending_events"  # session.info key: events of the open transaction


def add_event(session: AsyncSession, event: Event) -> None:
    """Queue ``event`` in the caller's transaction; it is published after the commit."""
    session.add(
        OutboxRow(
            subject=subject_for(type(event)), msg_id=event.event_id, payload=event.model_dump_json()
        )
    )
    session.info.setdefault(_PENDING, []).append(event)


def deliver_after_commit(
    sessions: async_sessionmaker[AsyncSession], deliver: Callable[[Sequence[Event]], None]
) -> None:
    """Call ``deliver`` with the events of every transaction of ``sessions`` once it commits.

    ``deliver`` runs inside the commit, on the event loop's thread: it must not block or await.
    A rolled-back transaction's events are dropped with it.
    """
    sync_class = sessions.kw["sync_session_class"]

    def committed(sync_session: Any) -> None:
        if events := sync_session.info.pop(_PENDING, None):
            deliver(events)

    def rolled_back(sync_session: Any, _transaction: Any) -> None:
        sync_session.info.pop(_PENDING, None)

    sa_event.listen(sync_class, "after_commit", committed)
    sa_event.listen(sync_class, "after_soft_rollback", rolled_back)


class OutboxRelay:
    def __init__(
        self, sessions: async_sessionmaker[AsyncSession], publisher: EventPublisher
    ) -> None:
        self._sessions = sessions
        self._publisher = publisher
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """Something was committed: publish it now rather than at the next poll."""
        self._wake.set()

    async def run(self) -> None:
        delay = RETRY_INITIAL_S
        while True:
            # cleared before reading, so a commit during the read wakes the next round
            self._wake.clear()
            try:
                published = await self.publish_pending()
            except Exception as exc:  # noqa: BLE001  (NATS or database trouble: retry, never die)
                stop_if_cancelled(exc)
                log.warning("outbox relay paused", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
                continue
            delay = RETRY_INITIAL_S
            if published < RELAY_BATCH:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
                # that arrives as the event is set (a commit at shutdown), and the relay would
                # then never stop (CPython gh-86296)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RELAY_POLL_S):
                        await self._wake.wait()

    async def publish_pending(self) -> int:
        """Publish one batch of outbox rows in order; returns how many went out."""
        async with self._sessions() as session:
            rows = (
                await session.exec(select(OutboxRow).order_by(col(OutboxRow.id)).limit(RELAY_BATCH))
            ).all()
            done: list[int] = []
            try:
                for row in rows:
                    await self._publisher.publish_serialized(
                        row.subject, row.payload.encode(), msg_id=row.msg_id
                    )
                    assert row.id is not None
                    done.append(row.id)
            finally:
                if done:
                    await session.exec(delete(OutboxRow).where(col(OutboxRow.id).in_(done)))
                    await session.commit()
            return len(done)
