"""Short-lived commands (``ip``, ``wg``) run to completion with a deadline.

Shared by ``wireguard`` and ``netns``, which translate its outcomes into their own errors. A
command past its deadline is killed, never left running behind a caller that has moved on.
"""

import asyncio
import contextlib
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence

#: how much of a failed command's stderr an error message quotes
_STDERR_TAIL_CHARS = 2000


STDIN_LIMIT = 60_000


async def run_command(
    argv: Sequence[str],
    *,
    timeout_s: float,
    stdin: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``argv`` and collect its output; a nonzero exit is the caller's to judge.

    Raises ``TimeoutError`` (after killing the command) past ``timeout_s``, and ``OSError`` when
    the executable cannot be started.
    """
    # ``stdin`` goes through a real pipe filled before the start, not the event loop's own
    # pipe: uvloop makes that a socketpair, and ``wg set … private-key /dev/stdin`` cannot
    # open a socket (ENXIO). A pipe holds 64 KiB; what we pass is a key, a few dozen bytes.
    read_end: int | None = None
    if stdin is not None:
        if len(stdin) > STDIN_LIMIT:
            raise ValueError(f"at most {STDIN_LIMIT} bytes go to a command's stdin")
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, stdin)
        finally:
            os.close(write_end)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.DEVNULL if read_end is None else read_end,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
    finally:
        if read_end is not None:
            os.close(read_end)
    try:
        async with asyncio.timeout(timeout_s):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        raise TimeoutError(f"`{shlex.join(argv)}` did not finish within {timeout_s}s") from None
    finally:
        if process.returncode is None:  # timed out or cancelled
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
    return subprocess.CompletedProcess(list(argv), await process.wait(), stdout, stderr)


def describe_failure(done: subprocess.CompletedProcess[bytes]) -> str:
    """``"`ip link add x type wireguard` exited with 2: Error: Unknown device type."``"""
    stderr = done.stderr.decode(errors="replace").strip()[-_STDERR_TAIL_CHARS:]
    return f"`{shlex.join(done.args)}` exited with {done.returncode}: {stderr or '(no output)'}"
