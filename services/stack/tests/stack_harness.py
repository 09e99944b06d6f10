"""The stack runner with a table of fake services, for the supervision tests.

Usage: ``python stack_harness.py SPECS.json`` where the file holds a list of
``{"name": str, "argv": [str, ...], "ready_port": int, "listen_port": int}`` (ports optional). Everything else is read from
the environment exactly as ``heron-stack`` reads it; logs are JSON on stderr, and ``stack ready``
goes to stdout once every service is up.
"""

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from heron_core.logging import configure_logging
from heron_core.settings import LogFormat
from heron_stack.readiness import TcpAccepting
from heron_stack.runner import run_stack
from heron_stack.settings import StackSettings
from heron_stack.specs import ServiceSpec

READY_LINE = b"stack ready\n"


def load_specs(path: Path) -> list[ServiceSpec]:
    entries: list[dict[str, Any]] = json.loads(path.read_text())
    return [
        ServiceSpec(
            name=entry["name"],
            argv=tuple(entry["argv"]),
            ready_checks=(
                (TcpAccepting("127.0.0.1", entry["ready_port"]),) if "ready_port" in entry else ()
            ),
            listens=(("127.0.0.1", entry["listen_port"]),) if "listen_port" in entry else (),
        )
        for entry in entries
    ]


def announce_ready() -> None:
    sys.stdout.buffer.write(READY_LINE)
    sys.stdout.buffer.flush()


def main() -> None:
    settings = StackSettings()
    configure_logging("stack", level=settings.log_level, fmt=LogFormat.JSON)
    specs = load_specs(Path(sys.argv[1]))
    sys.exit(asyncio.run(run_stack(specs, settings, on_ready=announce_ready)))


if __name__ == "__main__":
    main()
