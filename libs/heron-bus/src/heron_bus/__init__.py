"""Heron's NATS layer: one connection type, the wire names, the streams, typed publish and consume.

Parts: ``subjects`` (every subject, stream and KV bucket name), ``streams`` (stream definitions and
``ensure_streams``), ``connection`` (``connect`` → ``Bus``, ``Bus.publish``), ``consume``
(``events()`` → typed ``Delivery`` items from a durable pull consumer), ``embedded``
(``EmbeddedNats``, a child ``nats-server`` for the stack and tests), ``errors``. nats-py's types and
errors stay inside this package; ``Bus.nc``/``Bus.js`` expose them only for advanced use.
"""

from heron_bus.connection import Bus, connect
from heron_bus.consume import Delivery, events
from heron_bus.errors import BusError, BusUnavailableError, SchemaError
from heron_bus.streams import ensure_streams
from heron_bus.subjects import subject_for

__all__ = [
    "Bus",
    "BusError",
    "BusUnavailableError",
    "Delivery",
    "SchemaError",
    "connect",
    "ensure_streams",
    "events",
    "subject_for",
]
