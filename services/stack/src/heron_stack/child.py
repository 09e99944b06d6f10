"""One supervised service: spawn it, relay its output, wait until ready, restart it, stop it.

Each run of the command is a ``_Run``: a process in its own process group (so a stop reaches
whatever it started), with ``PR_SET_PDEATHSIG`` set (so it dies with the runner), watched
through a subprocess protocol rather than ``Process.wait()``, which also waits for the pipes and
would hang while a grandchild holds them open.
"""

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass

import structlog

from heron_core.backoff import Backoff
from heron_core.process import dying_with_parent
from heron_core.tasks import spawn
from heron_stack.errors import ExitedEarlyError, NotReadyError, PortInUseError, SpawnError
from heron_stack.output import LineRelay, PrefixedOutput
from heron_stack.readiness import ReadyCheck, accepts_connections
from heron_stack.specs import ServiceSpec

log = structlog.get_logger(__name__)

#: between two ready probes; short enough that start-up does not feel slow
READY_PROBE_INTERVAL_S = 0.1
#: after SIGKILL only a process stuck in the kernel (D state) still lives; do not hang on it
KILL_WAIT_S = 5.0
#: after its group is gone a child's pipes reach end of file at once, unless a process outside
#: the group (one that called setsid) holds them; then its last lines are not worth a hang
PIPE_DRAIN_S = 2.0


@dataclass(frozen=True)
class Timing:
    ready_timeout_s: float
    stop_timeout_s: float


class _ChildProtocol(asyncio.SubprocessProtocol):
    def __init__(self, name: str, stdout: PrefixedOutput, stderr: PrefixedOutput) -> None:
        self.exited = asyncio.Event()
        self.pipes_closed = asyncio.Event()
        self._relays = {1: LineRelay(name, stdout), 2: LineRelay(name, stderr)}

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        self._relays[fd].feed(bytes(data))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        self._relays.pop(fd).close()
        if not self._relays:
            self.pipes_closed.set()

    def process_exited(self) -> None:
        self.exited.set()


@dataclass
class _Run:
    """One process of a service, from spawn to exit."""

    transport: asyncio.SubprocessTransport
    protocol: _ChildProtocol
    started_at: float

    @property
    def pid(self) -> int:
        return self.transport.get_pid()

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode()

    async def wait_exit(self) -> int:
        await self.protocol.exited.wait()
        code = self.returncode
        assert code is not None  # process_exited is called after the return code is set
        return code

    async def release(self) -> None:
        """Relay what the exited process left in its pipes, then close them."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PIPE_DRAIN_S):
                await self.protocol.pipes_closed.wait()
        self.transport.close()

    def signal_group(self, signum: signal.Signals) -> None:
        """Send ``signum`` to the process group (the process and anything it started)."""
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.pid, signum)


class Child:
    """A service the supervisor keeps running, from ``start`` until ``stop``."""

    def __init__(
        self,
        spec: ServiceSpec,
        *,
        stdout: PrefixedOutput,
        stderr: PrefixedOutput,
        backoff: Backoff,
        timing: Timing,
    ) -> None:
        self.spec = spec
        self._stdout = stdout
        self._stderr = stderr
        self._backoff = backoff
        self._timing = timing
        self._run: _Run | None = None
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Spawn the service and wait until it is ready, then keep it running."""
        await self._refuse_taken_ports()
        run = await self._spawn()
        await self._wait_ready(run)
        self._watcher = spawn(self._supervise(run), name=f"supervise {self.spec.name}")

    async def stop(self) -> None:
        """SIGTERM to the group, SIGKILL after the stop timeout; no restart after this."""
        if self._watcher is not None:
            self._watcher.cancel()
            await asyncio.wait([self._watcher])
        if self._run is not None:
            await self._terminate(self._run)

    async def _refuse_taken_ports(self) -> None:
        for host, port in self.spec.listens:
            if await accepts_connections(host, port):
                raise PortInUseError(
                    f"{self.spec.name!r} cannot listen on {host!r} port {port!r}: something "
                    "already accepts connections there (another heron-stack?)"
                )

    async def _spawn(self) -> _Run:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await loop.subprocess_exec(
                lambda: _ChildProtocol(self.spec.name, self._stdout, self._stderr),
                *dying_with_parent(self.spec.argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env={**os.environ, **self.spec.env},
                process_group=0,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise SpawnError(
                f"{self.spec.name!r} cannot be started with {self.spec.argv[0]!r}: {exc}"
            ) from exc
        self._run = _Run(transport, protocol, started_at=time.monotonic())
        log.info("service started", child=self.spec.name, pid=self._run.pid)
        return self._run

    async def _wait_ready(self, run: _Run) -> None:
        """Pass every ready check in order within the ready timeout, or raise why not."""
        deadline = asyncio.get_running_loop().time() + self._timing.ready_timeout_s
        for check in self.spec.ready_checks:
            await self._wait_until(check, run, deadline)
        log.info("service ready", child=self.spec.name, pid=run.pid)

    async def _wait_until(self, check: ReadyCheck, run: _Run, deadline: float) -> None:
        while True:
            if run.returncode is not None:
                raise ExitedEarlyError(
                    f"{self.spec.name!r} exited with code {run.returncode!r} before "
                    f"{check.description} (its output is above)"
                )
            if await _probe(check, deadline):
                return
            if asyncio.get_running_loop().time() >= deadline:
                raise NotReadyError(
                    f"{self.spec.name!r} not ready within {self._timing.ready_timeout_s!r}s: "
                    f"{check.description} never held (HERON_STACK_READY_TIMEOUT_S)"
                )
            await asyncio.sleep(READY_PROBE_INTERVAL_S)

    async def _supervise(self, run: _Run) -> None:
        """Restart the service whenever it exits, with backoff, until cancelled by ``stop``."""
        while True:
            code = await run.wait_exit()
            run.signal_group(signal.SIGKILL)  # whatever it started must not outlive it
            await run.release()
            uptime_s = time.monotonic() - run.started_at
            delay_s = self._backoff.delay_after(uptime_s)
            log.warning(
                "service exited, restarting",
                child=self.spec.name,
                exit_code=code,
                **_signal_field(code),
                uptime_s=round(uptime_s, 1),
                restart_in_s=delay_s,
            )
            await asyncio.sleep(delay_s)
            run = await self._respawn()

    async def _respawn(self) -> _Run:
        while True:
            try:
                run = await self._spawn()
            except SpawnError as exc:
                delay_s = self._backoff.delay_after(0.0)
                log.error(
                    "service not restarted",
                    child=self.spec.name,
                    error=str(exc),
                    retry_in_s=delay_s,
                )
                await asyncio.sleep(delay_s)
                continue
            try:
                await self._wait_ready(run)
            except ExitedEarlyError:
                pass  # the supervise loop reports the exit and tries again
            except NotReadyError as exc:
                log.warning("restarted service not ready", child=self.spec.name, error=str(exc))
            return run

    async def _terminate(self, run: _Run) -> None:
        if run.returncode is None:
            log.info("stopping service", child=self.spec.name, pid=run.pid)
            run.signal_group(signal.SIGTERM)
            try:
                async with asyncio.timeout(self._timing.stop_timeout_s):
                    await run.wait_exit()
            except TimeoutError:
                log.warning(
                    "service ignored SIGTERM, killing it",
                    child=self.spec.name,
                    pid=run.pid,
                    waited_s=self._timing.stop_timeout_s,
                )
                run.signal_group(signal.SIGKILL)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(KILL_WAIT_S):
                        await run.wait_exit()
        run.signal_group(signal.SIGKILL)  # a grandchild that outlived its parent: no orphans
        await run.release()
        log.info("service stopped", child=self.spec.name, exit_code=run.returncode)


async def _probe(check: ReadyCheck, deadline: float) -> bool:
    """One probe, cut short at ``deadline`` (loop time)."""
    try:
        async with asyncio.timeout_at(deadline):
            return await check.probe()
    except TimeoutError:
        return False


def _signal_field(code: int) -> dict[str, str]:
    """A negative return code means killed by a signal; name it for the log."""
    if code >= 0:
        return {}
    try:
        return {"signal": signal.Signals(-code).name}
    except ValueError:
        return {}
