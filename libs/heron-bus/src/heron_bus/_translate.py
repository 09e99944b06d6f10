"""nats-py errors become heron_bus errors here, once; nothing else catches nats-py exceptions.

Every nats-py call goes through ``translated``, which also gives back a cancellation nats-py
swallowed: its requests wait with ``asyncio.wait_for``, which on Python 3.11 returns the answer
when a cancellation arrives in the same turn of the loop as the answer (CPython gh-86296), and the
task cancelled at shutdown would carry on as if nothing had been asked of it.
"""

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

import nats.errors
import nats.js.errors

from heron_bus.errors import BusError, BusUnavailableError

# the connection is gone or going; the caller may retry once NATS is back
_UNAVAILABLE = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
)


@contextmanager
def translated(doing: str) -> Iterator[None]:
    """Re-raise nats-py errors as heron_bus errors whose message starts with ``doing``, and a
    cancellation of the calling task that nats-py swallowed as ``CancelledError``."""
    with cancellation_kept(doing), _nats_errors(doing):
        yield


@contextmanager
def cancellation_kept(doing: str) -> Iterator[None]:
    """Raise ``CancelledError`` on the way out when the calling task was cancelled inside and
    the cancellation came out as something else, or not at all."""
    task = asyncio.current_task()
    cancels = task.cancelling() if task is not None else 0
    try:
        yield
    except Exception as exc:  # CancelledError, KeyboardInterrupt, SystemExit go on as they are
        if task is not None and task.cancelling() > cancels:
            raise asyncio.CancelledError(f"{doing}: cancelled") from exc
        raise
    if task is not None and task.cancelling() > cancels:
        raise asyncio.CancelledError(f"{doing}: cancelled")


@contextmanager
def _nats_errors(doing: str) -> Iterator[None]:
    try:
        yield
    except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError) as exc:
        raise BusUnavailableError(
            f"{doing}: no stream answered (are the streams ensured?)"
        ) from exc
    except TimeoutError as exc:  # nats.errors.TimeoutError is one too
        raise BusUnavailableError(f"{doing}: no answer in time") from exc
    except _UNAVAILABLE as exc:
        raise BusUnavailableError(f"{doing}: not connected ({describe(exc)})") from exc
    except nats.js.errors.ServiceUnavailableError as exc:
        raise BusUnavailableError(f"{doing}: jetstream unavailable") from exc
    except nats.js.errors.APIError as exc:
        raise BusError(f"{doing}: jetstream refused: {exc.description!r}") from exc
    except nats.errors.Error as exc:
        raise BusError(f"{doing}: {describe(exc)}") from exc


def describe(exc: BaseException) -> str:
    """One line naming an exception, for messages and logs (never a payload)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
