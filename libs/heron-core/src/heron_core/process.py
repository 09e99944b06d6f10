"""Child processes that die with their parent, however the parent dies.

A supervisor that is SIGKILLed cannot stop its children, so the kernel must: ``PR_SET_PDEATHSIG``
sends the child SIGTERM when the thread that forked it exits. It has to be set in the child,
between fork and exec. Python's ``preexec_fn`` can do that, but it runs Python code in a child
forked from a threaded process (gRPC, the default executor), which can crash or deadlock the
child — seen here as wireguard-go "exiting" with SIGSEGV before it ever ran. util-linux's
``setpriv`` (always present on Debian) sets it and execs the real command instead, so the fork
stays the safe vfork/exec path.
"""

import gc
from collections.abc import Sequence

#: prefix an argv with this to have the child receive SIGTERM when its parent thread exits
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "TERM", "--")


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv``, started so that it gets SIGTERM when the process that starts it dies."""
    return [*DIE_WITH_PARENT, *argv]


def calm_garbage_collector() -> None:
    """Keep the cyclic garbage collector off the request path's tail latency.

    Requests free their objects by reference counting; what the collector finds is mostly the
    long-lived startup heap (modules, settings, the table), which a full collection walks again
    and again — a pause of milliseconds that lands on whichever requests are in flight. Freeze
    that heap out of the collector's reach and let young generations grow larger first.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
