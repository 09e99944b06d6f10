"""The connection to NATS: ``connect`` gives a ``Bus`` that publishes events to JetStream.

Once connected, nats-py reconnects forever in the background; while it is away, ``publish``
fails fast with ``BusUnavailableError`` rather than queueing behind the outage.
"""

import asyncio
from types import TracebackType
from typing import Self

import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from heron_bus._translate import describe, translated
from heron_bus.errors import BusError, BusUnavailableError
from heron_bus.subjects import subject_for
from heron_core.events import Event

log = structlog.get_logger(__name__)

#: between two attempts to reach the server (nats-py's default); a restarted server is found again
#: within this long
RECONNECT_WAIT_S = 2.0
#: the header JetStream de-duplicates on, within the stream's duplicate window
MSG_ID_HEADER = "Nats-Msg-Id"


class Bus:
    """A NATS connection and its JetStream context; made by ``connect``, closed by ``close``.

    ``nc`` and ``js`` are the nats-py objects, for advanced use; everything else speaks Heron types.
    """

    def __init__(self, nc: NatsClient, *, url: str, watch: "_ConnectionWatch") -> None:
        self._nc = nc
        self._js = nc.jetstream()
        self._url = url
        self._watch = watch

    @property
    def nc(self) -> NatsClient:
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        return self._js

    @property
    def url(self) -> str:
        """The server's URL, without credentials (fit for logs and messages)."""
        return self._url

    @property
    def is_connected(self) -> bool:
        return self._nc.is_connected

    @property
    def is_closed(self) -> bool:
        """True once ``close`` was called: the connection will not come back."""
        return self._nc.is_closed

    async def publish(
        self, event: Event, *, msg_id: str | None = None, timeout_s: float = 5.0
    ) -> None:
        """Store ``event`` in JetStream and wait for the ack; ``msg_id`` defaults to its event id."""
        payload = event.model_dump_json().encode()
        await self.publish_serialized(
            subject_for(type(event)), payload, msg_id=msg_id or event.event_id, timeout_s=timeout_s
        )

    async def publish_serialized(
        self, subject: str, payload: bytes, *, msg_id: str, timeout_s: float = 5.0
    ) -> None:
        """Store an already serialized message (e.g. from an outbox) and wait for the ack."""
        doing = f"publish to {subject!r} on {self._url!r}"
        if not self._nc.is_connected:
            raise BusUnavailableError(f"{doing}: not connected (reconnecting in the background)")
        with translated(doing):
            await self._js.publish(
                subject, payload, timeout=timeout_s, headers={MSG_ID_HEADER: msg_id}
            )

    async def close(self) -> None:
        """Close the connection; idempotent."""
        self._watch.closing = True
        with translated(f"close the connection to {self._url!r}"):
            await self._nc.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


async def connect(url: str, *, name: str, connect_timeout_s: float = 5.0) -> Bus:
    """Connect to the NATS server at ``url`` as client ``name`` (shown in the server's monitoring).

    Retries for up to ``connect_timeout_s``, then raises ``BusUnavailableError``; once connected,
    the connection comes back by itself after any outage.
    """
    shown = redacted(url)
    watch = _ConnectionWatch(shown)
    nc = NatsClient()
    try:
        async with asyncio.timeout(connect_timeout_s):
            with translated(f"connect to {shown!r}"):
                await nc.connect(
                    servers=[url],
                    name=name,
                    # nats-py passes both to asyncio, which takes floats; its hints say int
                    connect_timeout=connect_timeout_s,  # type: ignore[arg-type]
                    reconnect_time_wait=RECONNECT_WAIT_S,  # type: ignore[arg-type]
                    max_reconnect_attempts=-1,
                    error_cb=watch.on_error,
                    disconnected_cb=watch.on_disconnected,
                    reconnected_cb=watch.on_reconnected,
                )
    except TimeoutError as exc:
        await _abandon(nc, watch)
        raise BusUnavailableError(
            f"connect to {shown!r}: unreachable within {connect_timeout_s}s ({watch.last_error})"
        ) from exc
    except BusError:  # nats-py refused the URL or options before opening anything
        raise
    except BaseException:  # the caller cancelled: leave no client behind
        await _abandon(nc, watch)
        raise
    watch.connected = True
    return Bus(nc, url=shown, watch=watch)


async def _abandon(nc: NatsClient, watch: "_ConnectionWatch") -> None:
    watch.closing = True
    await nc.close()


def redacted(url: str) -> str:
    """``url`` without its user name and password (plain string work: a bad URL is shown too)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}{sep}***@{authority.rpartition('@')[2]}{slash}{path}"


class _ConnectionWatch:
    """nats-py's connection callbacks: one log line per change, quiet while connecting or closing."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.connected = False
        self.closing = False
        self.last_error = "no attempt finished"

    async def on_error(self, exc: Exception) -> None:
        self.last_error = describe(exc)
        if self.connected and not self.closing:
            log.warning("nats connection error", url=self.url, error=self.last_error)

    async def on_disconnected(self) -> None:
        if self.connected and not self.closing:
            log.warning("nats disconnected, reconnecting", url=self.url)

    async def on_reconnected(self) -> None:
        log.info("nats reconnected", url=self.url)
