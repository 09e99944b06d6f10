"""Named background tasks that are never garbage-collected mid-flight.

``asyncio.create_task`` keeps only a weak reference to its task; a task nobody holds can vanish.
``spawn`` names every task (so it shows in debugging) and holds it until it finishes.
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
