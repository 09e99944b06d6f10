"""The settings base every service derives from.

Each service reads ``HERON_<SERVICE>_*`` plus the shared names below. ``HERON_MODE`` is
``production`` unless told otherwise: a service refuses unsafe defaults there (see each service's
``check_production``), and the stack runner sets ``development`` for a laptop.
"""

from enum import StrEnum
from pathlib import Path
from typing import Self

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from heron_core.errors import ConfigError


class RunMode(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class LogFormat(StrEnum):
    AUTO = "auto"  # console on a TTY, JSON otherwise
    JSON = "json"
    CONSOLE = "console"


class HeronSettings(BaseSettings):
    """Shared settings; subclasses add their own ``HERON_<SERVICE>_*`` fields."""

    model_config = SettingsConfigDict(env_prefix="HERON_", extra="ignore", frozen=True)

    mode: RunMode = Field(default=RunMode.PRODUCTION, description="`development` or `production`")
    data_dir: Path = Field(default=Path(".heron"), description="where durable local state lives")
    log_level: str = Field(default="info", description="debug, info, warning or error")
    log_format: LogFormat = Field(default=LogFormat.AUTO, description="auto, json or console")

    @property
    def is_development(self) -> bool:
        return self.mode is RunMode.DEVELOPMENT

    def production_problems(self) -> list[str]:
        """Unsafe choices that are fine on a laptop but refused in production."""
        return []

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> Self:
        if self.log_level.lower() not in {"debug", "info", "warning", "error"}:
            raise ConfigError(
                f"HERON_LOG_LEVEL {self.log_level!r} is not one of debug, info, warning, error"
            )
        if not self.is_development and (problems := self.production_problems()):
            raise ConfigError(
                "refusing to start in production mode: "
                + "; ".join(problems)
                + " (set HERON_MODE=development to allow this on a laptop)"
            )
        return self
