"""The stack runner's settings: its own ``HERON_STACK_*`` knobs plus the shared names it passes on.

Every field's description is the user documentation; README.md repeats them in one table.
"""

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from heron_core.settings import HeronSettings, RunMode


class StackSettings(HeronSettings):
    model_config = SettingsConfigDict(env_prefix="HERON_", extra="ignore", frozen=True)

    # A laptop is the stack runner's home: development unless told otherwise.
    mode: RunMode = Field(
        default=RunMode.DEVELOPMENT, description="passed to every service; `production` or not"
    )
    data_dir: Path = Field(
        default=Path(".heron"), description="state of every service; passed on as an absolute path"
    )
    nats_port: int = Field(default=4222, ge=1, le=65535, description="embedded NATS client port")
    management_host: str = Field(default="127.0.0.1", description="management REST API address")
    management_port: int = Field(
        default=8080, ge=1, le=65535, description="management REST API port"
    )
    management_grpc_host: str = Field(
        default="127.0.0.1",
        description="management gRPC address (agents and edges); 0.0.0.0 to let other hosts in",
    )
    management_grpc_port: int = Field(
        default=50051, ge=1, le=65535, description="management gRPC port"
    )
    database_url: str | None = Field(
        default=None,
        description="passed through to management; default SQLite under the data directory",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="passed through to management: the owner's API token (generated if unset)",
    )
    stack_ready_timeout_s: float = Field(
        default=60.0, gt=0, description="how long each service may take to become ready"
    )
    stack_stop_timeout_s: float = Field(
        default=10.0, gt=0, description="grace between SIGTERM and SIGKILL when stopping"
    )
    stack_restart_initial_s: float = Field(
        default=0.5, gt=0, description="first delay before restarting a crashed service"
    )
    stack_restart_max_s: float = Field(
        default=30.0, gt=0, description="the restart delay doubles up to this"
    )
    stack_restart_reset_after_s: float = Field(
        default=60.0, gt=0, description="a service up this long gets the first delay again"
    )

    @property
    def data_path(self) -> Path:
        """The data directory as an absolute path, so children agree on it whatever their cwd."""
        return self.data_dir.expanduser().resolve()

    @property
    def nats_url(self) -> str:
        return f"nats://127.0.0.1:{self.nats_port}"

    @property
    def management_grpc_url(self) -> str:
        host = self.management_grpc_host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.management_grpc_port}"

    @property
    def management_url(self) -> str:
        host = f"[{self.management_host}]" if ":" in self.management_host else self.management_host
        return f"http://{host}:{self.management_port}"
