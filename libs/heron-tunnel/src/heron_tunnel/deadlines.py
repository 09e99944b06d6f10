"""Coarse deadlines: one loop timer for the many timeouts that almost never come.

Every relayed connection sets an idle timeout, and every stream the edge opens a connect or
answer timeout; nearly all of them are cancelled long before they are due, microseconds to
seconds later. A loop timer each is a heap insert and a removal in the loop's timer queue plus
a handle object, made and dropped per connection. Here a deadline joins a bucket (a set), and
leaving it is a set discard: the loop holds one timer, for the earliest bucket.

Buckets are as coarse as the distance allows, as in the kernel's timer wheel: a deadline ``d``
seconds away goes to the bucket that ends at the next multiple of a power of two no larger
than ``d / 16`` (and no finer than ``RESOLUTION_S``). So it fires late by at most a sixteenth
of its distance (or ``RESOLUTION_S``), never early, and the buckets alive at any time are a
few dozen per octave of timeouts in use, whatever the number of deadlines.
"""

import asyncio
import heapq
import math
import weakref
from typing import Protocol

#: the finest bucket, in seconds: how late a near deadline may fire
RESOLUTION_S = 1 / 64
#: a deadline may fire late by this share of its distance (a power of two)
_SHARE_EXPONENT = -4  # 1/16
_FINEST_EXPONENT = round(math.log2(RESOLUTION_S))


class Expiring(Protocol):
    """What waits for a deadline: hashable (by identity, as objects are by default)."""

    def expired(self, now: float) -> None:
        """The deadline has passed: ``now`` (the loop's time, at or after it)."""


_all: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Deadlines]" = (
    weakref.WeakKeyDictionary()
)


class Deadlines:
    """The deadlines of one loop. ``add`` returns the bucket's key, which ``remove`` takes."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # the loop's table holds this object
        self._buckets: dict[float, set[Expiring]] = {}
        self._keys: list[float] = []  # a heap of the buckets' keys (their end times)
        self._timer: asyncio.TimerHandle | None = None
        self._armed = math.inf  # the key the timer is set for
        self._due = -math.inf  # during a tick: the key up to which buckets are being run

    def add(self, at: float, entry: Expiring, now: float) -> float:
        """Call ``entry.expired`` once, at ``at`` or a little after; ``now`` is the loop's
        time. Returns the key that ``remove`` needs."""
        distance = at - now
        if distance > RESOLUTION_S:
            _, exponent = math.frexp(distance)  # the distance is in [2**(e-1), 2**e)
            grain = math.ldexp(1.0, max(exponent - 1 + _SHARE_EXPONENT, _FINEST_EXPONENT))
        else:
            grain = RESOLUTION_S
        try:
            key = math.ceil(at / grain) * grain
        except (OverflowError, ValueError):
            raise ValueError(f"deadline {at} is not finite") from None
        if key <= self._due:  # added by a tick's entry: the next tick, or ticks never end
            key = self._due + RESOLUTION_S
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = set()
            heapq.heappush(self._keys, key)
            if key < self._armed:
                self._arm(key)
        bucket.add(entry)
        return key

    def remove(self, key: float, entry: Expiring) -> None:
        """``entry`` is not called for the deadline ``add`` gave ``key`` for (nothing when it
        has been called already)."""
        bucket = self._buckets.get(key)
        if bucket is not None:
            bucket.discard(entry)

    def __len__(self) -> int:
        """The deadlines waiting (for tests and metrics)."""
        return sum(len(bucket) for bucket in self._buckets.values())

    def _arm(self, key: float) -> None:
        loop = self._loop()
        if loop is None:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._armed = key
        self._timer = loop.call_at(key, self._tick)

    def _tick(self) -> None:
        loop = self._loop()
        if loop is None:
            return
        # a loop runs timers up to a clock tick early: the armed key has come
        now = max(loop.time(), self._armed)
        # while it runs, adds set no timer: the one for the earliest bucket is set at the end
        self._timer, self._armed, self._due = None, -math.inf, now
        buckets, keys = self._buckets, self._keys
        try:
            while keys and keys[0] <= now:
                key = heapq.heappop(keys)
                bucket = buckets[key]
                try:
                    while bucket:  # one by one: an entry may remove others of its bucket
                        entry = bucket.pop()
                        try:
                            entry.expired(now)
                        except Exception as exc:  # noqa: BLE001 (reported, as the loop does a callback's)
                            loop.call_exception_handler(
                                {"message": f"deadline of {entry!r} failed", "exception": exc}
                            )
                finally:
                    if bucket:  # what ``expired`` raised was no Exception: the rest runs later
                        heapq.heappush(keys, key)
                    else:
                        del buckets[key]
        finally:
            self._due, self._armed = -math.inf, math.inf
            if keys:
                self._arm(keys[0])


def deadlines(loop: asyncio.AbstractEventLoop) -> Deadlines:
    """The deadlines of ``loop`` (made on first use, dropped with the loop's last reference)."""
    found = _all.get(loop)
    if found is None:
        found = _all[loop] = Deadlines(loop)
    return found
