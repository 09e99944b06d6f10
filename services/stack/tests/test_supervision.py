"""The supervisor against real processes: fake services are small Python scripts.

Each test runs the real runner (``stack_harness.py`` → ``run_stack``) as a subprocess with a
table of fake services, then signals it the way a person or the kernel would, and looks at
processes through ``/proc``: nothing of our code is mocked.
"""

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HARNESS = Path(__file__).with_name("stack_harness.py")

#: every wait in these tests is bounded; generous, since CI machines can be slow
WAIT_S = 15.0

SLEEPER = """
import os, pathlib, sys, time
name, out = sys.argv[1], pathlib.Path(sys.argv[2])
with (out / f"{name}.pids").open("a") as pids:
    pids.write(f"{os.getpid()}\\n")
print(f"hello from {name}", flush=True)
print(f"warning from {name}", file=sys.stderr, flush=True)
while True:
    time.sleep(1)
"""

# ignores SIGTERM (and so does the grandchild it starts: SIG_IGN survives exec)
STUBBORN = """
import os, pathlib, signal, subprocess, sys, time
name, out = sys.argv[1], pathlib.Path(sys.argv[2])
signal.signal(signal.SIGTERM, signal.SIG_IGN)
grandchild = subprocess.Popen([sys.executable, "-c", "import time\\nwhile True: time.sleep(1)"])
with (out / f"{name}.pids").open("a") as pids:
    pids.write(f"{os.getpid()}\\n{grandchild.pid}\\n")
print(f"hello from {name}", flush=True)
while True:
    time.sleep(1)
"""

CRASHER = """
import pathlib, sys, time
name, out = sys.argv[1], pathlib.Path(sys.argv[2])
with (out / f"{name}.starts").open("a") as starts:
    starts.write(f"{time.monotonic()}\\n")
print("crashing now", flush=True)
sys.exit(3)
"""


@dataclass
class RunningStack:
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    out_dir: Path

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def events(self) -> list[dict[str, Any]]:
        """The runner's own JSON log lines (children's lines carry a ``name |`` prefix)."""
        return [json.loads(line) for line in self.stderr().splitlines() if line.startswith("{")]

    def pids(self, name: str) -> list[int]:
        path = self.out_dir / f"{name}.pids"
        return [int(pid) for pid in path.read_text().split()] if path.exists() else []

    def wait_ready(self) -> None:
        wait_for(lambda: "stack ready" in self.stdout(), "the runner to report ready", self)

    def stop(self, signum: signal.Signals = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return self.process.wait(timeout=WAIT_S)


StartStack = Callable[..., RunningStack]


@pytest.fixture
def start_stack(tmp_path: Path) -> Iterator[StartStack]:
    """Start the runner with fake services ``(name, script source)``; killed at teardown."""
    started: list[RunningStack] = []

    def start(
        *services: tuple[str, str],
        ready_port: int | None = None,
        listen_port: int | None = None,
        **env: str,
    ) -> RunningStack:
        out_dir = tmp_path / "out"
        out_dir.mkdir(exist_ok=True)
        table: list[dict[str, Any]] = []
        for name, source in services:
            script = tmp_path / f"{name}.py"
            script.write_text(source)
            table.append({"name": name, "argv": [sys.executable, str(script), name, str(out_dir)]})
        if ready_port is not None:
            table[-1]["ready_port"] = ready_port
        if listen_port is not None:
            table[-1]["listen_port"] = listen_port
        specs = tmp_path / "specs.json"
        specs.write_text(json.dumps(table))
        stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                [sys.executable, str(HARNESS), str(specs)],
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                env={
                    **os.environ,
                    "HERON_DATA_DIR": str(tmp_path / "data"),
                    "HERON_LOG_FORMAT": "json",
                    **env,
                },
            )
        stack = RunningStack(process, stdout_path, stderr_path, out_dir)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        if stack.process.poll() is None:  # a failed test: the kernel stops the children
            stack.process.kill()
            stack.process.wait(timeout=WAIT_S)


def test_child_output_is_prefixed_with_its_name(start_stack: StartStack) -> None:
    stack = start_stack(("alpha", SLEEPER), ("beta-long", SLEEPER))
    stack.wait_ready()
    for name in ("alpha", "beta-long"):  # ready means started, not yet printed
        hello, warning = f"hello from {name}", f"warning from {name}"
        wait_for(lambda: hello in stack.stdout(), f"{name}'s first line", stack)  # noqa: B023
        wait_for(lambda: warning in stack.stderr(), f"{name}'s stderr", stack)  # noqa: B023

    assert stack.stop() == 0
    stdout, stderr = stack.stdout().splitlines(), stack.stderr().splitlines()
    assert "alpha     | hello from alpha" in stdout
    assert "beta-long | hello from beta-long" in stdout
    assert "alpha     | warning from alpha" in stderr
    assert "beta-long | warning from beta-long" in stderr


def test_sigterm_stops_every_child_in_reverse_order(start_stack: StartStack) -> None:
    stack = start_stack(("first", SLEEPER), ("stubborn", STUBBORN), HERON_STACK_STOP_TIMEOUT_S="1")
    stack.wait_ready()
    wait_for(lambda: len(stack.pids("stubborn")) == 2, "stubborn's grandchild", stack)
    pids = stack.pids("first") + stack.pids("stubborn")
    assert all(alive(pid) for pid in pids)

    assert stack.stop(signal.SIGTERM) == 0

    assert [pid for pid in pids if alive(pid)] == []
    stopping = [e["child"] for e in stack.events() if e["event"] == "stopping service"]
    assert stopping == ["stubborn", "first"]
    assert any(e["event"] == "service ignored SIGTERM, killing it" for e in stack.events())


def test_ctrl_c_stops_the_stack_with_exit_code_zero(start_stack: StartStack) -> None:
    stack = start_stack(("only", SLEEPER))
    stack.wait_ready()
    wait_for(lambda: stack.pids("only") != [], "the service's pid", stack)

    assert stack.stop(signal.SIGINT) == 0
    assert not alive(stack.pids("only")[0])


def test_children_die_when_the_runner_is_killed(start_stack: StartStack) -> None:
    stack = start_stack(("one", SLEEPER), ("two", SLEEPER))
    stack.wait_ready()
    wait_for(lambda: stack.pids("one") and stack.pids("two"), "both services' pids", stack)
    pids = stack.pids("one") + stack.pids("two")

    assert stack.stop(signal.SIGKILL) == -signal.SIGKILL

    wait_for(lambda: not any(alive(pid) for pid in pids), "PR_SET_PDEATHSIG to end them", stack)


def test_a_crashed_service_is_restarted_with_growing_delays(start_stack: StartStack) -> None:
    stack = start_stack(
        ("crasher", CRASHER),
        HERON_STACK_RESTART_INITIAL_S="0.2",
        HERON_STACK_RESTART_MAX_S="0.8",
    )
    starts_path = stack.out_dir / "crasher.starts"
    wait_for(
        lambda: starts_path.exists() and len(starts_path.read_text().split()) >= 5,
        "five starts of the crashing service",
        stack,
    )
    assert stack.stop() == 0

    exits = [e for e in stack.events() if e["event"] == "service exited, restarting"]
    assert [e["exit_code"] for e in exits[:4]] == [3, 3, 3, 3]
    assert [e["restart_in_s"] for e in exits[:4]] == [0.2, 0.4, 0.8, 0.8]
    starts = [float(t) for t in starts_path.read_text().split()]
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    # each gap is the delay plus the time to notice the exit and start Python again;
    # 0.1 s of slack for a start-up that happened to be quicker than the one before
    for gap, delay in zip(gaps, [0.2, 0.4, 0.8, 0.8], strict=False):
        assert gap >= delay - 0.1, (gaps, delay)
    assert re.search(r"^crasher \| crashing now$", stack.stdout(), re.MULTILINE)


def test_a_service_that_exits_before_ready_stops_the_stack(start_stack: StartStack) -> None:
    # exits once 'first' is up (its pid written), so the test can see the runner stop it
    exits_at_once = (
        "import pathlib, sys, time\n"
        "pids = pathlib.Path(sys.argv[2]) / 'first.pids'\n"
        "deadline = time.monotonic() + 10\n"
        "while not (pids.exists() and pids.read_text().strip()):\n"
        "    if time.monotonic() > deadline:\n"
        "        break\n"
        "    time.sleep(0.02)\n"
        "print('cannot start', flush=True)\n"
        "sys.exit(4)\n"
    )
    stack = start_stack(("first", SLEEPER), ("broken", exits_at_once), ready_port=free_port())

    assert stack.process.wait(timeout=WAIT_S) == 1

    failures = [e for e in stack.events() if e["event"] == "stack not started"]
    assert len(failures) == 1
    assert "'broken' exited with code 4" in failures[0]["error"]
    assert "broken | cannot start" in stack.stdout()
    assert stack.pids("first") != []
    assert not any(alive(pid) for pid in stack.pids("first"))


def test_a_service_never_ready_stops_the_stack_after_the_timeout(
    start_stack: StartStack,
) -> None:
    stack = start_stack(
        ("first", SLEEPER),
        ("silent", SLEEPER),
        ready_port=free_port(),
        HERON_STACK_READY_TIMEOUT_S="1",
    )

    assert stack.process.wait(timeout=WAIT_S) == 1

    [failure] = [e for e in stack.events() if e["event"] == "stack not started"]
    assert "'silent' not ready within 1.0s" in failure["error"]
    assert "accepts TCP connections never held" in failure["error"]
    assert not any(alive(pid) for pid in stack.pids("first") + stack.pids("silent"))


def test_a_taken_port_stops_the_stack_before_the_service_starts(
    start_stack: StartStack,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        stack = start_stack(("first", SLEEPER), ("late", SLEEPER), listen_port=port)

        assert stack.process.wait(timeout=WAIT_S) == 1

    [failure] = [e for e in stack.events() if e["event"] == "stack not started"]
    assert f"'late' cannot listen on '127.0.0.1' port {port!r}" in failure["error"]
    assert stack.pids("late") == []
    assert not any(alive(pid) for pid in stack.pids("first"))


def alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie nobody has reaped yet counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    state = stat.rpartition(")")[2].split()[0]  # the name in parentheses may hold spaces
    return state not in {"Z", "X"}


def wait_for(condition: Callable[[], object], what: str, stack: RunningStack) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(
                f"waited {WAIT_S}s for {what}; runner exit code {stack.process.poll()!r}\n"
                f"stdout:\n{stack.stdout()}\nstderr:\n{stack.stderr()}"
            )
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
