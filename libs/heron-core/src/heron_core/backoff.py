"""When to try again (restart a crashed service, reconnect a stream): exponential backoff that
forgets after a stable run."""

from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays ``initial_s``, doubling up to ``max_s``; back to ``initial_s`` after a long run.

    A service (or stream) that fails at once is retried slowly enough not to flood the log; one
    that ran for ``reset_after_s`` or longer failed for a new reason and is retried quickly again.
    """

    initial_s: float
    max_s: float
    reset_after_s: float
    _next_s: float = field(init=False)

    def __post_init__(self) -> None:
        self._next_s = self.initial_s

    def delay_after(self, uptime_s: float) -> float:
        """The delay before the next start of a process that ran for ``uptime_s``."""
        if uptime_s >= self.reset_after_s:
            self._next_s = self.initial_s
        delay = self._next_s
        self._next_s = min(delay * 2, self.max_s)
        return delay
