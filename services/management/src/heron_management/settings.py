"""Management's settings: ``HERON_MANAGEMENT_*`` plus the shared ``HERON_*`` names."""

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from heron_core.secret_tokens import PROXY_TOKEN_PREFIX, is_well_formed
from heron_core.settings import HeronSettings
from heron_management.domain.addresses import split_host_port

MIN_ADMIN_TOKEN_CHARS = 32  # a guessable bootstrap token is an open door in production


class ManagementSettings(HeronSettings):
    model_config = SettingsConfigDict(env_prefix="HERON_", extra="ignore", frozen=True)

    management_host: str = Field(default="127.0.0.1", description="REST API listen address")
    management_port: int = Field(default=8080, ge=1, le=65535, description="REST API listen port")
    management_grpc_host: str = Field(
        default="127.0.0.1", description="gRPC listen address (agents' and edges' streams)"
    )
    management_grpc_port: int = Field(default=50051, ge=1, le=65535, description="gRPC listen port")
    management_snapshot_batch_size: int = Field(
        default=500,
        ge=1,
        le=5000,
        description="services per ConfigBatch of an edge's snapshot (keeps messages under 4 MB)",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite at `$HERON_DATA_DIR/management.db`; "
        "`postgresql+asyncpg://user:pass@host/db` for PostgreSQL",
    )
    nats_url: str = Field(default="nats://127.0.0.1:4222", description="NATS with JetStream")
    admin_token: SecretStr | None = Field(
        default=None,
        description="owner API token of the default account; generated and printed once if unset",
    )
    management_edge_token: SecretStr | None = Field(
        default=None,
        description="proxy token of the edge that runs next to management (`heron-stack` sets "
        "it): kept in force in the default account as `embedded edge`; unset: none",
    )
    management_max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="largest request body the API accepts"
    )
    management_dns_resolver: str | None = Field(
        default=None,
        description="the DNS server custom domains are verified against, `host:port` (`[v6]:port`; "
        "the port defaults to 53); unset: the system's resolvers (`/etc/resolv.conf`)",
    )
    management_dns_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="how long one verification's DNS lookups may take"
    )
    management_domain_recheck_s: float = Field(
        default=300.0,
        ge=1,
        description="how often custom domains not verified yet are verified again by themselves",
    )

    @field_validator("management_dns_resolver")
    @classmethod
    def _resolver_address(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        split_host_port(value)  # refuses what is not host:port, with the reason
        return value.strip()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{Path(self.data_dir).resolve() / 'management.db'}"

    def production_problems(self) -> list[str]:
        problems = []
        token = self.admin_token.get_secret_value() if self.admin_token else None
        if token is not None and len(token) < MIN_ADMIN_TOKEN_CHARS:
            problems.append(f"HERON_ADMIN_TOKEN is shorter than {MIN_ADMIN_TOKEN_CHARS} characters")
        edge = self.management_edge_token.get_secret_value() if self.management_edge_token else None
        if edge and not is_well_formed(edge, PROXY_TOKEN_PREFIX):
            problems.append(
                f"HERON_MANAGEMENT_EDGE_TOKEN is not a proxy token ({PROXY_TOKEN_PREFIX}…, as "
                "/api/proxy-tokens makes them): a chosen one may be guessable"
            )
        return problems
