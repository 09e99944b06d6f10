"""The JetStream streams Heron needs, and ``ensure_streams`` to create or update them at start-up."""

from dataclasses import dataclass

import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from heron_bus._translate import translated
from heron_bus.connection import Bus
from heron_bus.subjects import (
    ACCESS_LOGS_STREAM,
    ACCESS_LOGS_SUBJECTS,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
)

_DAY_S = 24 * 3600.0
#: JetStream's error code for "stream name already in use with a different configuration"
_STREAM_NAME_IN_USE = 10058


@dataclass(frozen=True, slots=True)
class StreamDefinition:
    """One stream: file storage, limits retention, oldest messages dropped first."""

    name: str
    subjects: tuple[str, ...]
    max_age_s: float
    #: publishes with the same ``Nats-Msg-Id`` within this window are stored once
    duplicate_window_s: float
    #: -1 for no cap
    max_bytes: int = -1

    def to_nats(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            discard=DiscardPolicy.OLD,
            max_age=self.max_age_s,
            duplicate_window=self.duplicate_window_s,
            max_bytes=self.max_bytes,
        )


EVENTS = StreamDefinition(
    name=EVENTS_STREAM,
    subjects=(EVENTS_SUBJECTS,),
    # consumers down for a long weekend still catch up
    max_age_s=7 * _DAY_S,
    # covers a publisher (the management outbox) retrying after a lost ack
    duplicate_window_s=120.0,
)
ACCESS_LOGS = StreamDefinition(
    name=ACCESS_LOGS_STREAM,
    subjects=(ACCESS_LOGS_SUBJECTS,),
    max_age_s=7 * _DAY_S,
    duplicate_window_s=120.0,
    # a buffer in front of the accesslog service; if it is down for long, drop the oldest
    # records rather than fill the disk
    max_bytes=1024**3,
)
STREAMS = (EVENTS, ACCESS_LOGS)


async def ensure_streams(target: Bus | JetStreamContext) -> None:
    """Create every stream in ``STREAMS``, or update it to its definition; idempotent.

    Safe when several processes race at start-up: creating a stream that exists with the same
    configuration succeeds.
    """
    js = target.js if isinstance(target, Bus) else target
    for stream in STREAMS:
        await _ensure(js, stream)


async def _ensure(js: JetStreamContext, stream: StreamDefinition) -> None:
    config = stream.to_nats()
    with translated(f"ensure stream {stream.name!r}"):
        try:
            await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            await js.update_stream(config)
