"""nats-py errors become heron_bus errors here, once; nothing else catches nats-py exceptions."""

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
    """Re-raise nats-py errors as heron_bus errors whose message starts with ``doing``."""
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
