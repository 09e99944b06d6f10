"""Typed consumption of events through durable JetStream pull consumers.

``events()`` yields each message of one event type as a ``Delivery``; the caller acks it once
handled, or naks it to see it again. A message that is not a valid event of that type (or has a
newer ``schema_version`` than this code knows) is logged and terminated, never redelivered.
"""

import asyncio
import json
from collections.abc import AsyncGenerator
from contextlib import suppress
from typing import Any, Generic, Literal, TypeVar

import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from pydantic import ValidationError

from heron_bus._translate import translated
from heron_bus.connection import Bus
from heron_bus.errors import BusError, BusUnavailableError, SchemaError
from heron_bus.subjects import EVENTS_STREAM, subject_for
from heron_core.events import Event

log = structlog.get_logger(__name__)

E = TypeVar("E", bound=Event)

#: where a durable starts when it is first created: every stored event, only the last, or only new
DeliverPolicy = Literal["all", "last", "new"]

#: how long one pull waits on the server before asking again; bounds how late a closed
#: connection is noticed, not how late events arrive
FETCH_WAIT_S = 5.0
#: unacked for this long, a delivery goes to the consumer again
ACK_WAIT_S = 30.0
#: how long ``Delivery.ack`` waits for the server to confirm
ACK_TIMEOUT_S = 5.0
#: while NATS is away, how often to look whether it is back (nats-py reconnects on its own)
_AWAY_POLL_S = 0.5


class Delivery(Generic[E]):
    """One delivered event; ``ack`` it once handled, or ``nak`` it to have it delivered again."""

    __slots__ = ("_msg", "event")

    def __init__(self, event: E, msg: Msg) -> None:
        self.event = event
        self._msg = msg

    async def ack(self) -> None:
        """Mark the event handled; returns once the server has recorded it."""
        with translated(f"ack event {self.event.event_id!r}"):
            await self._msg.ack_sync(timeout=ACK_TIMEOUT_S)

    async def nak(self, delay_s: float | None = None) -> None:
        """Have the event delivered again, after ``delay_s`` seconds if given."""
        with translated(f"nak event {self.event.event_id!r}"):
            await self._msg.nak(delay=delay_s)


async def events(
    bus: Bus, event_type: type[E], *, durable: str, deliver_policy: DeliverPolicy = "all"
) -> AsyncGenerator[Delivery[E], None]:
    """Deliveries of ``event_type`` to the durable consumer ``durable``, forever.

    The durable is created on first use with ``deliver_policy``, and afterwards resumes where it
    left off; give each consumer of each event type its own name. Raises ``BusUnavailableError``
    when the connection is closed; outages in between are ridden out. Close it (``aclose()`` or
    ``contextlib.aclosing``) to unsubscribe; the durable and its position stay on the server.
    """
    subject = subject_for(event_type)
    sub = await _subscribe(bus, subject, durable, deliver_policy)
    bound = log.bind(subject=subject, durable=durable)
    doing = f"fetch {subject!r} for {durable!r} on {bus.url!r}"
    try:
        while True:
            msg = await _next_msg(bus, sub, doing)
            if msg is None:
                continue
            try:
                event = parse_event(event_type, msg.data)
            except SchemaError as exc:
                bound.warning("event skipped", seq=msg.metadata.sequence.stream, reason=str(exc))
                # a lost term only means the message comes back after ACK_WAIT_S, to be skipped again
                with suppress(BusUnavailableError), translated(f"terminate on {subject!r}"):
                    await msg.term()
                continue
            yield Delivery(event, msg)
    finally:
        with suppress(BusError), translated(f"unsubscribe {durable!r}"):  # may be closed already
            await sub.unsubscribe()


def parse_event(event_type: type[E], data: bytes) -> E:
    """``data`` as an ``event_type``, or ``SchemaError`` with a reason that quotes no values."""
    try:
        document: Any = json.loads(data)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError both are
        raise SchemaError(f"not json: {exc}") from exc
    if not isinstance(document, dict):
        raise SchemaError(f"not a json object but {type(document).__name__!r}")
    version = document.get("schema_version", 1)
    if not isinstance(version, int) or version > event_type.current_schema_version:
        raise SchemaError(
            f"schema_version {version!r} is not one of 1..{event_type.current_schema_version!r}"
        )
    try:
        return event_type.model_validate(document)
    except ValidationError as exc:
        fields = ", ".join(
            f"{'.'.join(map(str, error['loc'])) or '(root)'} ({error['type']})"
            for error in exc.errors(include_url=False, include_input=False)
        )
        raise SchemaError(f"not a valid {event_type.__name__!r}: {fields}") from exc


async def _subscribe(
    bus: Bus, subject: str, durable: str, deliver_policy: DeliverPolicy
) -> JetStreamContext.PullSubscription:
    config = api.ConsumerConfig(
        deliver_policy=api.DeliverPolicy(deliver_policy),
        ack_policy=api.AckPolicy.EXPLICIT,
        ack_wait=ACK_WAIT_S,
    )
    with translated(f"subscribe {durable!r} to {subject!r} on {bus.url!r}"):
        return await bus.js.pull_subscribe(
            subject, durable=durable, stream=EVENTS_STREAM, config=config
        )


async def _next_msg(bus: Bus, sub: JetStreamContext.PullSubscription, doing: str) -> Msg | None:
    """The next message; None if none came within ``FETCH_WAIT_S`` or NATS is away for now."""
    if not bus.is_connected:
        if bus.is_closed:
            raise BusUnavailableError(f"{doing}: the connection is closed")
        await asyncio.sleep(_AWAY_POLL_S)
        return None
    try:
        with translated(doing):
            # One message per pull: a pull left half-filled on the server would capture messages
            # after this subscription is gone, and they would wait out ACK_WAIT_S to come back.
            msgs = await sub.fetch(1, timeout=FETCH_WAIT_S)
    except BusUnavailableError:
        if bus.is_closed:
            raise
        return None
    return msgs[0]
