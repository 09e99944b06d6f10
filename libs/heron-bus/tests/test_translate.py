"""``translated``: nats-py errors become heron_bus errors, and a cancellation stays one."""

import asyncio

import nats.errors
import pytest

from heron_bus._translate import translated
from heron_bus.bucket import Bucket
from heron_bus.errors import BusUnavailableError


async def answer_despite_cancel() -> str:
    """What nats-py's requests do on Python 3.11 when the answer and a cancellation cross:
    ``asyncio.wait_for`` returns the answer and the cancellation is gone (CPython gh-86296)."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "answer"
    return "no cancellation"


async def closed_despite_cancel() -> str:
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        raise nats.errors.ConnectionClosedError from None
    return "no cancellation"


async def call(work: object) -> str:
    assert asyncio.iscoroutinefunction(work)
    with translated("publish to 'x'"):
        answer: str = await work()
    return answer


@pytest.mark.parametrize("work", [answer_despite_cancel, closed_despite_cancel])
async def test_a_cancellation_nats_py_swallowed_is_raised_again(work: object) -> None:
    task = asyncio.get_running_loop().create_task(call(work))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()


async def test_without_a_cancellation_the_answer_comes_back() -> None:
    async def answer() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await call(answer) == "answer"


async def test_a_nats_error_becomes_a_bus_error() -> None:
    async def closed() -> str:
        raise nats.errors.ConnectionClosedError

    with pytest.raises(BusUnavailableError, match="publish to 'x': not connected"):
        await call(closed)


async def test_a_timeout_around_the_call_still_reports_a_timeout() -> None:
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.01):
            await call(answer_despite_cancel)


class SwallowingKv:
    """A nats-py KeyValue whose ``get`` answers across a cancellation, as it does on 3.11."""

    async def get(self, key: str) -> str:
        del key
        return await answer_despite_cancel()


async def test_a_kv_bucket_keeps_a_cancellation_too() -> None:
    bucket = Bucket(SwallowingKv(), "auth_keys", None)  # type: ignore[arg-type]
    task = asyncio.get_running_loop().create_task(bucket.get("k"))
    await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.wait({task}, timeout=5)
    assert task.cancelled()
