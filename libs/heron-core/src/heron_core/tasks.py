"""Named background tasks that are never garbage-collected mid-flight.

``asyncio.create_task`` keeps only a weak reference to its task; a task nobody holds can vanish.
``spawn`` names every task (so it shows in debugging) and holds it until it finishes.

``stop_if_cancelled`` belongs in every ``except Exception`` of a loop that retries for ever: a
cancellation that lands in a library's cleanup can come out as another error (a connection
closed mid-query, a client that turns it into its own exception), and a loop that logs it and
tries again has swallowed the request to stop: the task, and the shutdown waiting for it, never
end.
"""

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def spawn(coro: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    _running.add(task)
    task.add_done_callback(_running.discard)
    return task


def stop_if_cancelled(exc: BaseException) -> None:
    """Raise ``CancelledError`` (from ``exc``) if this task has been asked to stop."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc
