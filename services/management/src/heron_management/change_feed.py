"""In-process fan-out of domain events to the gRPC streams of the account they concern.

Events arrive from this process's own commits (``events.deliver_after_commit``) and from every
replica through NATS (``event_bus.NatsEventListener``), so a stream may hear of one change twice:
listeners recompute what they show and send only what differs, which makes that harmless.
"""

from collections.abc import Callable, Iterable

import structlog

from heron_core.events import Event

log = structlog.get_logger(__name__)

Listener = Callable[[Event], None]


class ChangeFeed:
    def __init__(self) -> None:
        self._listeners: dict[str, set[Listener]] = {}

    def listen(self, account_id: str, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` (sync, non-blocking) for each event of ``account_id``; returns the
        function that stops it."""
        self._listeners.setdefault(account_id, set()).add(listener)

        def stop() -> None:
            listeners = self._listeners.get(account_id)
            if listeners is not None:
                listeners.discard(listener)
                if not listeners:
                    del self._listeners[account_id]

        return stop

    def publish(self, events: Iterable[Event]) -> None:
        for event in events:
            account_id = getattr(event, "account_id", None)
            if not isinstance(account_id, str):
                continue
            for listener in tuple(self._listeners.get(account_id, ())):
                try:
                    listener(event)
                except Exception:  # one broken stream must not starve the others
                    log.exception("change listener failed", event=type(event).__name__)
