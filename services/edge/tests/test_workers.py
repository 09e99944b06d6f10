"""``WorkerPool``: real worker processes, and ``applied`` waiting for each one of them."""

import asyncio
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from heron_edge.routes import RoutingTable
from heron_edge.workers import WorkerPool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def until(check: Callable[[], bool], within_s: float = 30) -> None:
    async with asyncio.timeout(within_s):
        while not check():  # noqa: ASYNC110  # polling the pool's view of its workers
            await asyncio.sleep(0.005)


@pytest_asyncio.fixture
async def pool(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[WorkerPool]:
    for name, value in {
        "HERON_PROXY_DOMAIN": "edge.example.test",
        "HERON_PROXY_TOKEN": "t" * 32,
        "HERON_PROXY_ADDRESS": f"127.0.0.1:{free_port()}",
        "HERON_PROXY_HTTP_ADDRESS": "",
        "HERON_LOG_LEVEL": "warning",
        "HERON_MODE": "development",
    }.items():
        monkeypatch.setenv(name, value)
    workers = WorkerPool(2)
    workers.start()
    try:
        async with asyncio.timeout(30):
            while not workers.listening:  # the workers say so on their pipes
                assert not workers.problems, workers.problems
                await asyncio.sleep(0.05)
        yield workers
    finally:
        for pid in workers.pids:
            if pid is not None:
                os.kill(pid, signal.SIGCONT)
        await workers.stop(grace_s=2)


async def test_applied_answers_once_every_worker_has_applied(pool: WorkerPool) -> None:
    pool.publish("table", RoutingTable())
    assert await pool.applied(timeout_s=10)


async def test_applied_waits_for_a_worker_that_is_behind(pool: WorkerPool) -> None:
    assert await pool.applied(timeout_s=10)  # what the start sent
    stalled = pool.pids[1]
    assert stalled is not None
    os.kill(stalled, signal.SIGSTOP)  # it reads nothing until it continues
    pool.publish("table", RoutingTable())
    assert not await pool.applied(timeout_s=0.5)
    os.kill(stalled, signal.SIGCONT)
    assert await pool.applied(timeout_s=10)


async def test_a_restarted_worker_listens_only_once_it_has_the_state(pool: WorkerPool) -> None:
    pool.publish("table", RoutingTable())
    assert await pool.applied(timeout_s=10)
    killed = pool.pids[1]
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    await until(lambda: pool.pids[1] != killed and not pool.listening)  # restarted, not up
    await until(lambda: pool.listening)
    # "listening" came after the answers for the state (one stream, in order)
    assert pool.behind == []
