"""heron_bus's exceptions; nats-py errors are translated into these once, at this boundary.

HeronError
 └── BusError               anything the bus could not do
      ├── BusUnavailableError   NATS is not reachable or timed out (retry later)
      └── SchemaError           a message that is not a valid event of the expected type
"""

from heron_core.errors import HeronError


class BusError(HeronError):
    """The bus could not do what was asked."""


class BusUnavailableError(BusError):
    """NATS is unreachable or did not answer in time; the caller may retry."""


class SchemaError(BusError):
    """A message that does not parse as the expected event, or has a newer schema version."""
