"""The stack's life: start every service, report ready, wait for Ctrl-C or SIGTERM, stop.

``run_stack`` is what ``heron-stack`` runs with the real table of services; tests run it with
fake ones.
"""

import asyncio
import signal
import sys
from collections.abc import Callable, Sequence

import structlog

from heron_core.backoff import Backoff
from heron_core.tasks import spawn
from heron_stack.child import Timing
from heron_stack.errors import StartupError
from heron_stack.settings import StackSettings
from heron_stack.specs import ServiceSpec
from heron_stack.supervisor import Supervisor

log = structlog.get_logger(__name__)

#: the signals that stop the stack in order; a second one while stopping changes nothing
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

#: exit codes of ``heron-stack``
EXIT_OK = 0
EXIT_STARTUP_FAILED = 1


async def run_stack(
    specs: Sequence[ServiceSpec], settings: StackSettings, *, on_ready: Callable[[], None]
) -> int:
    """Run ``specs`` until a stop signal; the process exit code (0 after a requested stop)."""
    supervisor = Supervisor(
        specs,
        timing=Timing(settings.stack_ready_timeout_s, settings.stack_stop_timeout_s),
        new_backoff=lambda: Backoff(
            initial_s=settings.stack_restart_initial_s,
            max_s=settings.stack_restart_max_s,
            reset_after_s=settings.stack_restart_reset_after_s,
        ),
        stdout=sys.stdout.buffer,
        stderr=sys.stderr.buffer,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, _request_stop, stop, signum)
    try:
        return await _run_until_stopped(supervisor, stop, on_ready)
    finally:
        await supervisor.stop_all()
        log.info("stack stopped")
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)


async def _run_until_stopped(
    supervisor: Supervisor, stop: asyncio.Event, on_ready: Callable[[], None]
) -> int:
    starting = spawn(supervisor.start_all(), name="start services")
    stop_requested = spawn(stop.wait(), name="wait for a stop signal")
    await asyncio.wait({starting, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():  # stopped while starting: what started is stopped by the caller
        starting.cancel()
        await asyncio.wait({starting})
        return EXIT_OK
    try:
        starting.result()
    except StartupError as exc:
        log.error("stack not started", error=str(exc))
        stop_requested.cancel()
        return EXIT_STARTUP_FAILED
    on_ready()
    await stop_requested
    return EXIT_OK


def _request_stop(stop: asyncio.Event, signum: signal.Signals) -> None:
    if stop.is_set():
        log.info("already stopping", signal=signum.name)
        return
    log.info("stopping the stack", signal=signum.name)
    stop.set()
