"""The agent's settings: ``HERON_AGENT_*`` plus the shared ``HERON_*`` names; flags override."""

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from heron_agent.forwarder import DEFAULT_PORT
from heron_core.settings import HeronSettings


def _default_state_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/lib/heron/agent")
    return Path.home() / ".local" / "state" / "heron" / "agent"


class AgentSettings(HeronSettings):
    model_config = SettingsConfigDict(env_prefix="HERON_", extra="ignore", frozen=True)

    agent_state_dir: Path = Field(
        default_factory=_default_state_dir,
        description="key, login and status files (root: /var/lib/heron/agent)",
    )
    agent_management_url: str | None = Field(
        default=None, description="management's gRPC URL; `--management` overrides"
    )
    agent_setup_key: SecretStr | None = Field(
        default=None, description="setup key for the first login; `--setup-key` overrides"
    )
    agent_interface: str = Field(
        default="heron0", max_length=15, description="WireGuard interface name, unique per host"
    )
    agent_wireguard_port: int = Field(
        default=0, ge=0, le=65535, description="WireGuard UDP port; 0: any free port"
    )
    agent_forwarder_port: int = Field(
        default=DEFAULT_PORT,
        ge=1,
        le=65535,
        description="forwarder TCP port on the overlay address",
    )
    agent_tcp_fast_open: bool = Field(
        default=True,
        description="edges may send a stream's header with its SYN (TCP Fast Open, with "
        "cookies); sets the listener bit of net.ipv4.tcp_fastopen when it is off",
    )
