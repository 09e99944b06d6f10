"""The services of a stack, started in table order and stopped in reverse."""

from collections import Counter
from collections.abc import Callable, Sequence
from typing import BinaryIO

from heron_core.backoff import Backoff
from heron_core.errors import ConfigError
from heron_stack.child import Child, Timing
from heron_stack.output import PrefixedOutput
from heron_stack.specs import ServiceSpec


class Supervisor:
    """Starts each service once the one before it is ready; stops them last-started first."""

    def __init__(
        self,
        specs: Sequence[ServiceSpec],
        *,
        timing: Timing,
        new_backoff: Callable[[], Backoff],
        stdout: BinaryIO,
        stderr: BinaryIO,
    ) -> None:
        if twice := sorted(name for name, n in Counter(s.name for s in specs).items() if n > 1):
            raise ConfigError(f"service names must be unique; repeated: {twice!r}")
        width = max((len(spec.name) for spec in specs), default=0)
        out = PrefixedOutput(stdout, name_width=width)
        err = PrefixedOutput(stderr, name_width=width)
        self._children = [
            Child(spec, stdout=out, stderr=err, backoff=new_backoff(), timing=timing)
            for spec in specs
        ]
        self._started: list[Child] = []

    async def start_all(self) -> None:
        """Start every service in order; ``StartupError`` names the first that did not come up.

        A service counts as started from the moment it is spawned, so ``stop_all`` stops it
        even if its start fails or is cancelled half-way.
        """
        for child in self._children:
            self._started.append(child)
            await child.start()

    async def stop_all(self) -> None:
        """Stop what was started, in reverse order; safe to call more than once."""
        while self._started:
            await self._started.pop().stop()
