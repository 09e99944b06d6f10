"""Network namespaces joined by veth pairs: several hosts on one machine, for tests and benchmarks.

``Namespace`` is an async context manager: ``ip netns add`` on entry (with ``lo`` up); on exit,
error or not, the processes still inside are stopped and the namespace deleted (its veth ends
and WireGuard links go with it). ``veth`` joins two namespaces. ``unique_name`` makes names that
concurrent runs on one host cannot share, since they embed the creating process's pid; that pid
is also how ``cleanup_stale`` tells the leftovers of crashed runs from namespaces in use.

Async, not sync, because the callers are asyncio programs that also supervise wireguard-go: a
blocking ``run`` of a ten-second iperf3 would freeze the event loop that drains its output.
Everything here needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN).
"""

import asyncio
import contextlib
import os
import re
import secrets
import signal
import string
import subprocess
from ipaddress import IPv4Interface
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import structlog

from heron_core.errors import HeronError
from heron_tunnel._commands import describe_failure, run_command

log = structlog.get_logger(__name__)

#: where ``ip netns add`` bind-mounts the namespaces it names
NETNS_DIR = Path("/run/netns")
#: the default deadline of ``Namespace.run``
RUN_TIMEOUT_S = 10.0
#: processes left inside a namespace get SIGTERM, then SIGKILL after this long
KILL_GRACE_S = 1.0
#: interface names are at most IFNAMSIZ - 1 bytes; namespace names follow, so one scheme fits both
MAX_NAME_CHARS = 15
#: a pid in base 36, zero-padded: 36**5 > 2**22, the largest pid_max Linux allows
_PID_CHARS = 5
#: random base-36 characters after the pid, against a leftover of a dead run whose pid came back
_RANDOM_CHARS = 3
MAX_PREFIX_CHARS = MAX_NAME_CHARS - _PID_CHARS - _RANDOM_CHARS
_BASE36 = string.digits + string.ascii_lowercase
_PREFIX = re.compile(r"[a-zA-Z0-9_=+.-]+")
#: between two looks at the processes left in a namespace being deleted
_POLL_INTERVAL_S = 0.02

_issued: set[str] = set()

#: what ``Namespace.spawn`` accepts for a standard stream (as ``asyncio.create_subprocess_exec``)
Stream = int | IO[bytes] | None


class NamespaceError(HeronError):
    """A namespace could not be created, used or deleted, or a command inside it failed."""


class Namespace:
    """One network namespace, created on entry and deleted on exit; commands run inside it."""

    def __init__(self, name: str) -> None:
        if not _PREFIX.fullmatch(name) or name in {".", ".."} or len(name) > MAX_NAME_CHARS:
            raise ValueError(
                f"namespace name {name!r} must be 1-{MAX_NAME_CHARS} characters "
                "of letters, digits and _=+.-"
            )
        self._name = name

    @classmethod
    def unique(cls, prefix: str) -> Self:
        """A namespace named by ``unique_name(prefix)`` (not created yet)."""
        return cls(unique_name(prefix))

    @property
    def name(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"Namespace({self._name!r})"

    async def create(self) -> None:
        """``ip netns add`` and bring ``lo`` up; ``NamespaceError`` if the name is taken."""
        await _ip("netns", "add", self._name)
        try:
            await _ip("-n", self._name, "link", "set", "lo", "up")
        except BaseException:
            await self.delete()
            raise
        log.debug("network namespace created", netns=self._name)

    async def delete(self) -> None:
        """Stop every process inside (SIGTERM, then SIGKILL) and delete the namespace; idempotent."""
        if not (NETNS_DIR / self._name).exists():
            return
        await _stop_processes(self._name)
        await _ip("netns", "delete", self._name)
        log.debug("network namespace deleted", netns=self._name)

    def command(self, *argv: str) -> list[str]:
        """``argv`` prefixed to run inside the namespace, for callers that start it themselves."""
        return ["ip", "netns", "exec", self._name, *argv]

    async def run(
        self,
        *argv: str,
        check: bool = True,
        timeout_s: float = RUN_TIMEOUT_S,
        stdin: bytes | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` inside and collect its output; killed past ``timeout_s``.

        ``NamespaceError`` on timeout, and on a nonzero exit when ``check`` (quoting stderr).
        """
        try:
            done = await run_command(self.command(*argv), stdin=stdin, timeout_s=timeout_s)
        except (OSError, TimeoutError) as exc:
            raise NamespaceError(f"in netns {self._name!r}: {exc}") from exc
        if check and done.returncode != 0:
            raise NamespaceError(f"in netns {self._name!r}: {describe_failure(done)}")
        return done

    async def spawn(
        self,
        *argv: str,
        stdin: Stream = subprocess.DEVNULL,
        stdout: Stream = subprocess.DEVNULL,
        stderr: Stream = subprocess.DEVNULL,
    ) -> asyncio.subprocess.Process:
        """Start ``argv`` inside; the caller waits for it (``delete`` stops whatever is left)."""
        return await asyncio.create_subprocess_exec(
            *self.command(*argv), stdin=stdin, stdout=stdout, stderr=stderr
        )

    async def pids(self) -> list[int]:
        """The processes running inside (``ip netns pids``)."""
        return [int(pid) for pid in (await _ip("netns", "pids", self._name)).split()]

    async def __aenter__(self) -> Self:
        await self.create()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.delete()


async def veth(
    a: Namespace, b: Namespace, a_addr: IPv4Interface, b_addr: IPv4Interface
) -> tuple[str, str]:
    """Join ``a`` and ``b`` with a veth pair addressed ``a_addr``/``b_addr``; its two names.

    The ends are created directly inside the namespaces (never in ours) and vanish with them.
    """
    if a_addr.network != b_addr.network or a_addr.ip == b_addr.ip:
        raise ValueError(f"veth addresses {a_addr} and {b_addr} must be two hosts of one network")
    a_end, b_end = unique_name("va"), unique_name("vb")
    await _ip(
        "link", "add", a_end, "netns", a.name, "type", "veth", "peer", "name", b_end,
        "netns", b.name,
    )  # fmt: skip
    for namespace, end, address in ((a, a_end, a_addr), (b, b_end, b_addr)):
        await _ip("-n", namespace.name, "address", "add", str(address), "dev", end)
        await _ip("-n", namespace.name, "link", "set", end, "up")
    return a_end, b_end


def unique_name(prefix: str) -> str:
    """``prefix`` + this process's pid (5 base-36 characters) + 3 random ones: ≤ 15 characters.

    Unique on the host among live processes, and never repeated within this one; fits both
    namespace and interface names (``prefix`` at most ``MAX_PREFIX_CHARS`` characters).
    """
    if not _PREFIX.fullmatch(prefix) or len(prefix) > MAX_PREFIX_CHARS:
        raise ValueError(
            f"name prefix {prefix!r} must be 1-{MAX_PREFIX_CHARS} characters "
            "of letters, digits and _=+.-"
        )
    pid = _base36(os.getpid()).rjust(_PID_CHARS, "0")
    while True:
        name = prefix + pid + "".join(secrets.choice(_BASE36) for _ in range(_RANDOM_CHARS))
        if name not in _issued:
            _issued.add(name)
            return name


async def cleanup_stale(prefix: str) -> list[str]:
    """Delete the namespaces ``unique_name(prefix)`` made for processes that no longer exist.

    Returns their names. Namespaces of live processes, and names of any other shape, are left
    alone. The pid is this host's view: a run in another pid namespace looks dead from here.
    """
    stale = [
        name
        for name in await _namespace_names()
        if (pid := _creator_pid(name, prefix)) is not None and not _alive(pid)
    ]
    for name in stale:
        await Namespace(name).delete()
    if stale:
        log.info("stale network namespaces deleted", prefix=prefix, netns=stale)
    return stale


def _creator_pid(name: str, prefix: str) -> int | None:
    """The pid ``unique_name(prefix)`` put in ``name``; None if ``name`` is not of that shape."""
    if not name.startswith(prefix) or len(name) != len(prefix) + _PID_CHARS + _RANDOM_CHARS:
        return None
    digits = name[len(prefix) : len(prefix) + _PID_CHARS]
    if not all(char in _BASE36 for char in digits):
        return None
    return int(digits, 36)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


async def _namespace_names() -> list[str]:
    # ``ip netns list`` prints "name" or "name (id: 3)", one a line
    return [line.split()[0] for line in (await _ip("netns", "list")).splitlines() if line]


async def _stop_processes(name: str) -> None:
    """SIGTERM whatever runs in namespace ``name``; SIGKILL what is left after ``KILL_GRACE_S``."""
    for sig, grace_s in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        pids = await Namespace(name).pids()
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if await _emptied(name, grace_s):
            return
    raise NamespaceError(
        f"netns {name!r}: processes {await Namespace(name).pids()} survived SIGKILL"
    )


async def _emptied(name: str, within_s: float) -> bool:
    """True once no process runs in namespace ``name``; False if some still do after ``within_s``."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        if not await Namespace(name).pids():
            return True
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(_POLL_INTERVAL_S)


async def _ip(*argv: str) -> str:
    try:
        done = await run_command(["ip", *argv], timeout_s=RUN_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise NamespaceError(str(exc)) from exc
    if done.returncode != 0:
        raise NamespaceError(describe_failure(done))
    return done.stdout.decode()


def _base36(number: int) -> str:
    digits = ""
    while True:
        number, digit = divmod(number, 36)
        digits = _BASE36[digit] + digits
        if number == 0:
            return digits
