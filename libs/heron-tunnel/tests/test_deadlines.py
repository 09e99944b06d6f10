"""Coarse deadlines: never early, late by a bounded share of their distance, and gone once
removed."""

import asyncio
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heron_tunnel import deadlines as _deadlines
from heron_tunnel.deadlines import RESOLUTION_S, Deadlines, Expiring


class Recorder:
    def __init__(self, calls: list[tuple["Recorder", float]], due: float) -> None:
        self.calls = calls
        self.due = due
        self.at: float | None = None

    def expired(self, now: float) -> None:
        self.at = asyncio.get_running_loop().time()
        self.calls.append((self, now))


async def test_a_deadline_fires_once_and_never_early() -> None:
    # how late is the bucket's business (below); a loaded machine adds its own lateness
    loop = asyncio.get_running_loop()
    wheel = _deadlines.deadlines(loop)
    assert _deadlines.deadlines(loop) is wheel
    calls: list[tuple[Recorder, float]] = []
    now = loop.time()
    entries = [Recorder(calls, now + delay) for delay in (0.0, 0.01, 0.05, 0.2, 0.4)]
    for entry in entries:
        wheel.add(entry.due, entry, now)

    await asyncio.sleep(0.6)

    assert sorted(id(entry) for entry, _ in calls) == sorted(id(entry) for entry in entries)
    for entry, told in calls:
        assert told >= entry.due  # ``now`` as given is never before the deadline
        assert entry.at is not None
        assert entry.at >= entry.due - 0.002  # a loop's clock tick, at most
    assert len(wheel) == 0


async def test_a_removed_deadline_is_not_called() -> None:
    loop = asyncio.get_running_loop()
    wheel = Deadlines(loop)
    calls: list[tuple[Recorder, float]] = []
    now = loop.time()
    kept, removed = Recorder(calls, now + 0.05), Recorder(calls, now + 0.05)
    wheel.add(kept.due, kept, now)
    key = wheel.add(removed.due, removed, now)
    wheel.remove(key, removed)
    wheel.remove(key, removed)  # twice: nothing

    await asyncio.sleep(0.2)

    assert [entry for entry, _ in calls] == [kept]
    wheel.remove(key, kept)  # after it fired: nothing


async def test_an_entry_may_remove_another_of_its_bucket_and_add_a_due_one() -> None:
    # the due one runs in the next tick: entries that keep adding due ones cannot hold the loop
    loop = asyncio.get_running_loop()
    wheel = Deadlines(loop)
    order: list[str] = []
    now = loop.time()
    keys: dict[str, float] = {}

    class Entry:
        def __init__(self, name: str) -> None:
            self.name = name

        def expired(self, now: float) -> None:
            order.append(self.name)
            if self.name == "late":
                return
            for other in entries:
                if other is not self and other.name != "late":
                    wheel.remove(keys[other.name], other)
            late = Entry("late")
            keys["late"] = wheel.add(now - 1, late, now)  # due already

    entries = [Entry("a"), Entry("b")]
    for entry in entries:
        keys[entry.name] = wheel.add(now + 0.02, entry, now)

    await asyncio.sleep(0.15)

    assert order in (["a", "late"], ["b", "late"])


async def test_a_nearer_deadline_moves_the_loop_timer_earlier() -> None:
    loop = asyncio.get_running_loop()
    wheel = Deadlines(loop)
    calls: list[tuple[Recorder, float]] = []
    now = loop.time()
    far, near = Recorder(calls, now + 60), Recorder(calls, now + 0.03)
    wheel.add(far.due, far, now)
    wheel.add(near.due, near, now)

    await asyncio.sleep(0.2)

    assert [entry for entry, _ in calls] == [near]
    assert len(wheel) == 1


@given(
    distance=st.floats(min_value=-10, max_value=1e6, allow_nan=False),
    now=st.floats(min_value=0, max_value=1e7, allow_nan=False),
)
def test_a_bucket_ends_at_or_after_the_deadline_within_a_sixteenth(
    distance: float, now: float
) -> None:
    # no loop runs: the key is where the deadline goes, and the timer is never reached
    loop = asyncio.new_event_loop()
    try:
        wheel = Deadlines(loop)
        at = now + distance
        key = wheel.add(at, Recorder([], at), now)
        assert key >= at
        assert key - at <= max(RESOLUTION_S, distance / 16) * (1 + 1e-9) + 1e-6
    finally:
        loop.close()


def test_the_buckets_stay_few_for_many_deadlines() -> None:
    loop = asyncio.new_event_loop()
    try:
        wheel = Deadlines(loop)
        keys = {
            wheel.add(now / 1000 + 300, Recorder([], 0), now / 1000) for now in range(100_000)
        }  # a connection every millisecond for 100 s, each with a 300 s idle deadline
        assert len(keys) <= 100 / 16 + 2
        assert len(wheel) == 100_000
    finally:
        loop.close()


@pytest.mark.parametrize("value", [math.inf, math.nan])
def test_a_deadline_must_be_finite(value: float) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="finite"):
            Deadlines(loop).add(value, Recorder([], 0), 0.0)
    finally:
        loop.close()


async def test_an_entry_that_keeps_adding_due_deadlines_does_not_hold_the_loop() -> None:
    loop = asyncio.get_running_loop()
    wheel = Deadlines(loop)
    turns: list[str] = []

    class Again:
        runs = 0

        def expired(self, now: float) -> None:
            self.runs += 1
            turns.append(f"expired {self.runs}")
            if self.runs == 1:
                loop.call_soon(turns.append, "the loop's turn")
            if self.runs < 3:
                wheel.add(now - 1, self, now)  # due already: the next tick

    wheel.add(loop.time(), Again(), loop.time())
    await asyncio.sleep(0.2)

    assert turns == ["expired 1", "the loop's turn", "expired 2", "expired 3"]


class Stop(BaseException):
    """Not an Exception: through the tick to the loop, which reports it."""


@pytest.mark.parametrize("raised", [RuntimeError, Stop])
async def test_an_entry_that_raises_is_reported_and_the_rest_of_its_bucket_runs(
    raised: type[BaseException],
) -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict[str, object]] = []
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    wheel = Deadlines(loop)
    calls: list[tuple[Recorder, float]] = []
    now = loop.time()

    class Raising:
        def expired(self, now: float) -> None:
            raise raised

    oks = [Recorder(calls, now + 0.01) for _ in range(4)]
    entries: list[Expiring] = [*oks[:2], Raising(), *oks[2:]]
    for entry in entries:
        wheel.add(now + 0.01, entry, now)
    try:
        await asyncio.sleep(0.2)
    finally:
        loop.set_exception_handler(None)

    assert sorted(id(entry) for entry, _ in calls) == sorted(id(entry) for entry in oks)
    assert len(wheel) == 0
    assert [type(context.get("exception")) for context in reported] == [raised]
