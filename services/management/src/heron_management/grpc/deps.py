"""What the servicers share, built once by ``app.py``."""

import random
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_management.change_feed import ChangeFeed
from heron_management.grpc.streams import StreamRegistry


@dataclass(frozen=True)
class StreamDeps:
    sessions: async_sessionmaker[AsyncSession]
    feed: ChangeFeed
    snapshot_batch_size: int
    registry: StreamRegistry = field(default_factory=StreamRegistry)
    #: overlay address proposals; SystemRandom so that replicas never propose in lockstep
    rng: random.Random = field(default_factory=random.SystemRandom)
