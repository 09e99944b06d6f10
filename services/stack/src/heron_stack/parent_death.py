"""Children die with the runner: ``PR_SET_PDEATHSIG`` set between fork and exec.

If the runner is SIGKILLed it cannot stop anything, so the kernel does it: each child gets
SIGTERM when the thread that forked it exits (prctl(2)). The runner forks from its event-loop
thread, which lives as long as the runner.
"""

import ctypes
import os
import signal
from collections.abc import Callable

#: from <linux/prctl.h>
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child receive SIGTERM when this process dies.

    libc is loaded here, in the parent: the child between fork and exec should do no more than
    the two system calls.
    """
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent_pid = os.getpid()

    def in_child() -> None:
        if prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            # subprocess reports an exception here to the parent as SubprocessError
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
        if os.getppid() != parent_pid:  # the runner died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child
