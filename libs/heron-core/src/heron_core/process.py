"""Child processes that die with their parent, however the parent dies.

A supervisor that is SIGKILLed cannot stop its children, so the kernel must: ``PR_SET_PDEATHSIG``
sends the child SIGTERM when the thread that forked it exits. It has to be set in the child,
between fork and exec. Python's ``preexec_fn`` can do that, but it runs Python code in a child
forked from a threaded process (gRPC, the default executor), which can crash or deadlock the
child — seen here as wireguard-go "exiting" with SIGSEGV before it ever ran. util-linux's
``setpriv`` (always present on Debian) sets it and execs the real command instead, so the fork
stays the safe vfork/exec path.
"""

from collections.abc import Sequence

#: prefix an argv with this to have the child receive SIGTERM when its parent thread exits
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "TERM", "--")


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv``, started so that it gets SIGTERM when the process that starts it dies."""
    return [*DIE_WITH_PARENT, *argv]
