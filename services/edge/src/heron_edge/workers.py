"""Data-plane worker processes: each runs a ``DataPlane`` on the shared ports (``SO_REUSEPORT``).

Python runs one thread of Python at a time, so the edge scales across cores with processes.
The control process (config stream, WireGuard, certificates) starts ``count`` workers and keeps
each one's copy of the routing table and certificates current over a socketpair: a message is
a 4-byte length and a pickle of ``(kind, payload)`` — both ends are this program, started by
itself, so pickle is safe here. A worker that dies is restarted with backoff and gets the
current state (then ``replayed``) before it listens; the others keep serving meanwhile. A
worker whose control socket closes (the control process died) stops on its own.

A worker answers every message, once applied, with ``("applied", n)``: how many it has applied
on this connection. ``WorkerPool.applied`` waits for those answers, so that what the edge
reports to management (a service it serves) holds for every worker, not just the fastest: a
new service answered by one worker and unknown to another for a moment would look served and
then not.
"""

import asyncio
import contextlib
import os
import pickle
import signal
import socket
import struct
import sys
import time
from typing import Any

import structlog

from heron_core.backoff import Backoff
from heron_core.process import dying_with_parent
from heron_core.tasks import spawn

log = structlog.get_logger(__name__)

_LENGTH = struct.Struct("!I")
MAX_MESSAGE_BYTES = 256 * 1024 * 1024
#: a worker applies a message in milliseconds; past this, ``applied`` stops waiting for it
APPLIED_TIMEOUT_S = 5.0
#: follows the current state sent to a (re)started worker, which listens only after it
REPLAYED = "replayed"


class ProtocolError(Exception):
    """The other end sent something that is not a message of ours."""


def encode(kind: str, payload: Any) -> bytes:
    data = pickle.dumps((kind, payload), protocol=pickle.HIGHEST_PROTOCOL)
    return _LENGTH.pack(len(data)) + data


async def read_message(reader: asyncio.StreamReader) -> tuple[str, Any] | None:
    """The next message; None at a clean end of stream."""
    try:
        header = await reader.readexactly(_LENGTH.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ProtocolError("the control stream ended inside a message") from None
        return None
    (length,) = _LENGTH.unpack(header)
    if length > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"a message of {length} bytes is larger than allowed")
    data = await reader.readexactly(length)
    message = pickle.loads(data)  # noqa: S301  (our own process on the other end)
    if not (isinstance(message, tuple) and len(message) == 2 and isinstance(message[0], str)):
        raise ProtocolError("not a (kind, payload) message")
    return message[0], message[1]


class Worker:
    """One worker process, restarted when it dies."""

    def __init__(self, index: int, state: dict[str, Any]) -> None:
        self.index = index
        self._state = state  # kind → latest payload, shared by the pool
        self._writer: asyncio.StreamWriter | None = None
        self._process: asyncio.subprocess.Process | None = None
        self.listening = False
        self.problem: str | None = None
        self._stopping = False
        #: messages sent on the current connection, and how many the worker said it applied
        self._sent = 0
        self._applied = 0
        self._progress = asyncio.Event()  # set on every answer and when the connection ends

    async def run(self) -> None:
        backoff = Backoff(initial_s=0.5, max_s=10.0, reset_after_s=30.0)
        while not self.stopping():
            started = time.monotonic()
            code = await self._run_once()
            if self.stopping():  # stop() ran while we awaited
                return
            delay = backoff.delay_after(time.monotonic() - started)
            log.error(
                "edge worker exited, restarting",
                worker=self.index,
                exit_code=code,
                problem=self.problem,
                retry_in_s=delay,
            )
            await asyncio.sleep(delay)

    def stopping(self) -> bool:
        return self._stopping

    @property
    def behind(self) -> bool:
        return self._writer is not None and self._applied < self._sent

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def _run_once(self) -> int | None:
        parent, child = socket.socketpair()
        try:
            argv = [
                sys.executable, "-m", "heron_edge.worker",
                "--control-fd", str(child.fileno()), "--index", str(self.index),
            ]  # fmt: skip
            self._process = await asyncio.create_subprocess_exec(
                *dying_with_parent(argv), pass_fds=(child.fileno(),)
            )
        finally:
            child.close()
        reader, writer = await asyncio.open_connection(sock=parent)
        self._writer = writer
        self._sent = self._applied = 0
        try:
            for kind, payload in list(self._state.items()):
                self.send(kind, payload)
            self.send(REPLAYED, None)
            while (message := await read_message(reader)) is not None:
                kind, payload = message
                if kind == "applied" and isinstance(payload, int):
                    self._applied = payload
                    self._progress.set()
                elif kind == "listening":
                    self.listening, self.problem = True, None
                    log.debug("edge worker listening", worker=self.index, ports=payload)
                elif kind == "error":
                    self.problem = str(payload)
        except (ProtocolError, ConnectionError) as exc:
            log.error("edge worker's control stream broke", worker=self.index, error=str(exc))
        finally:
            self.listening = False
            self._writer = None
            self._progress.set()
            writer.close()
        return await self._process.wait()

    def send(self, kind: str, payload: Any) -> None:
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(encode(kind, payload))
            self._sent += 1

    async def applied(self) -> None:
        """Return once the worker applied what was sent to it so far, or has no connection (a
        worker that starts again is sent everything before it serves)."""
        writer, wanted = self._writer, self._sent
        while self._writer is writer and writer is not None and self._applied < wanted:
            self._progress.clear()
            await self._progress.wait()

    async def stop(self, grace_s: float) -> None:
        self._stopping = True
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace_s + 2.0):
                await process.wait()
        except TimeoutError:
            log.warning("edge worker did not stop in time, killing it", worker=self.index)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


class WorkerPool:
    """``count`` workers, all told the same state."""

    def __init__(self, count: int) -> None:
        self._state: dict[str, Any] = {}
        self._workers = [Worker(index, self._state) for index in range(count)]
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def listening(self) -> bool:
        return all(worker.listening for worker in self._workers)

    @property
    def problems(self) -> list[str]:
        return [f"worker {w.index}: {w.problem}" for w in self._workers if w.problem]

    @property
    def behind(self) -> list[int]:
        """The workers that have not yet applied everything sent to them."""
        return [w.index for w in self._workers if w.behind]

    @property
    def pids(self) -> list[int | None]:
        """Each worker's process id while it runs."""
        return [w.pid for w in self._workers]

    def start(self) -> None:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        self._tasks = [
            spawn(worker.run(), name=f"edge worker {worker.index}") for worker in self._workers
        ]

    def publish(self, kind: str, payload: Any) -> None:
        self._state[kind] = payload
        for worker in self._workers:
            worker.send(kind, payload)

    async def applied(self, timeout_s: float = APPLIED_TIMEOUT_S) -> bool:
        """Wait until every worker applied what was published so far; False (and a warning)
        when one has not within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(worker.applied() for worker in self._workers))
        except TimeoutError:
            log.warning("an edge worker is slow to apply its configuration", timeout_s=timeout_s)
            return False
        return True

    async def stop(self, grace_s: float) -> None:
        await asyncio.gather(*(worker.stop(grace_s) for worker in self._workers))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
