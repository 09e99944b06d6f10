"""What the agent keeps between runs, in one directory: its key, its login and its status.

``wireguard.key`` (0600) is the peer's identity: as long as it stays, a re-login resumes the same
peer with the same overlay address. ``login.json`` (0600) holds the peer token that
authenticates the sync stream and later logins without the setup key. ``status.json`` (0644, no
secrets) is what the running agent last knew, for ``heron status``.
"""

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from heron_core.errors import ConfigError
from heron_tunnel.keys import load_or_create_private_key

KEY_FILE = "wireguard.key"
LOGIN_FILE = "login.json"
STATUS_FILE = "status.json"


@dataclass(frozen=True)
class Login:
    management_url: str
    peer_id: str
    overlay_address: str
    overlay_network: str
    peer_token: str


@dataclass(frozen=True)
class EdgeStatus:
    public_key: str
    endpoint: str
    overlay_address: str
    #: seconds since the last WireGuard handshake; None: none yet
    handshake_age_s: float | None


@dataclass(frozen=True)
class Status:
    """The running agent's view, rewritten whenever it changes."""

    state: str  # starting, logging in, connected, reconnecting, stopped
    detail: str
    updated_at: str
    pid: int
    management_url: str
    peer_id: str | None = None
    overlay_address: str | None = None
    interface: str | None = None
    sync_connected: bool = False
    allowed_targets: int = 0
    edges: tuple[EdgeStatus, ...] = ()


class StateDir:
    def __init__(self, path: Path) -> None:
        self.path = path

    def prepare(self) -> None:
        """Create the directory (0700); refuse one that others can read."""
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        mode = self.path.stat().st_mode & 0o777
        if mode & 0o077:
            raise ConfigError(
                f"the agent's state directory {self.path} is readable by others (mode "
                f"{mode:o}); run: chmod 700 {self.path}"
            )

    def private_key(self) -> str:
        return load_or_create_private_key(self.path / KEY_FILE)

    def load_login(self) -> Login | None:
        try:
            data = json.loads((self.path / LOGIN_FILE).read_text())
            return Login(**data)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                f"{self.path / LOGIN_FILE} is damaged ({exc}); delete it and run heron up "
                "again with --setup-key"
            ) from exc

    def save_login(self, login: Login) -> None:
        _write_atomically(self.path / LOGIN_FILE, json.dumps(asdict(login), indent=2), 0o600)

    def save_status(self, status: Status) -> None:
        _write_atomically(self.path / STATUS_FILE, json.dumps(asdict(status), indent=2), 0o644)

    def load_status(self) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.path / STATUS_FILE).read_text())
        except FileNotFoundError:
            return None
        except ValueError:
            return None  # being rewritten by an older agent, or damaged: nothing to show
        return data


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_atomically(path: Path, text: str, mode: int) -> None:
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
