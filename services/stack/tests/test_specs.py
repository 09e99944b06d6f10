"""The table of services and the banner, from settings (no process is started)."""

import os
import sys
from pathlib import Path

import pytest

from heron_core.settings import LogFormat, RunMode
from heron_stack.banner import render_banner
from heron_stack.readiness import HttpOk, TcpAccepting
from heron_stack.settings import StackSettings
from heron_stack.specs import child_log_format, stack_specs


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StackSettings:
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("HERON_")]:
        monkeypatch.delenv(name)
    return StackSettings(nats_port=14222, management_port=18080)


def test_nats_starts_first_and_management_is_python_m(settings: StackSettings) -> None:
    nats, management = stack_specs(settings, stderr_is_tty=False)

    assert nats.name == "nats"
    assert "--jetstream" in nats.argv
    assert nats.argv[nats.argv.index("--store_dir") + 1] == str(settings.data_path / "nats")
    assert [c.description for c in nats.ready_checks] == [
        TcpAccepting("127.0.0.1", 14222).description
    ]
    assert management.argv == (sys.executable, "-m", "heron_management")
    assert [c.description for c in management.ready_checks] == [
        HttpOk("http://127.0.0.1:18080/healthz").description,
        HttpOk("http://127.0.0.1:18080/readyz").description,
        TcpAccepting("127.0.0.1", settings.management_grpc_port).description,
    ]


def test_management_gets_the_shared_environment(settings: StackSettings) -> None:
    _, management = stack_specs(settings, stderr_is_tty=False)

    assert settings.data_path.is_absolute()
    assert management.env["HERON_MODE"] == "development"
    assert management.env["HERON_DATA_DIR"] == str(settings.data_path)
    assert management.env["HERON_NATS_URL"] == "nats://127.0.0.1:14222"
    assert management.env["HERON_MANAGEMENT_PORT"] == "18080"
    assert management.env["HERON_LOG_FORMAT"] == "json"


def test_children_log_for_the_runners_terminal() -> None:
    assert child_log_format(LogFormat.AUTO, stderr_is_tty=True) == "console"
    assert child_log_format(LogFormat.AUTO, stderr_is_tty=False) == "json"
    assert child_log_format(LogFormat.JSON, stderr_is_tty=True) == "json"


def test_the_banner_names_every_url_and_the_mode(settings: StackSettings) -> None:
    banner = render_banner(settings)

    for expected in (
        "http://127.0.0.1:18080/api",
        "http://127.0.0.1:18080/api/openapi.json",
        "http://127.0.0.1:18080/api/docs",
        "nats://127.0.0.1:14222",
        str(settings.data_path),
        "development",
    ):
        assert expected in banner


def test_the_banner_hides_the_database_password(settings: StackSettings) -> None:
    with_postgres = settings.model_copy(
        update={"database_url": "postgresql+asyncpg://heron:s3cret@db:5432/heron"}
    )

    banner = render_banner(with_postgres)

    assert "s3cret" not in banner
    assert "postgresql+asyncpg://heron:***@db:5432/heron" in banner


def test_production_mode_is_passed_on(settings: StackSettings) -> None:
    production = settings.model_copy(update={"mode": RunMode.PRODUCTION})

    _, management = stack_specs(production, stderr_is_tty=False)

    assert management.env["HERON_MODE"] == "production"
