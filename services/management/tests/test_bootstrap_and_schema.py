"""A fresh install's first start, and migrations that match the models."""

import asyncio
from pathlib import Path

import grpc
import httpx
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from grpc_clients import Management
from management_fixtures import RunningApi, ServerThread, management_settings
from sqlalchemy.engine import Connection
from sqlmodel import SQLModel

from heron_core.secret_tokens import PROXY_TOKEN_PREFIX, generate_token
from heron_management.db.engine import create_engine, migrate


def test_generated_owner_token_is_printed_once(
    nats_url: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'first.db'}"
    settings = management_settings(database, nats_url, tmp_path)
    with ServerThread(settings):
        pass
    printed = capfd.readouterr().err
    token = next(line.strip() for line in printed.splitlines() if line.strip().startswith("hrn_"))
    with ServerThread(settings):  # the second start prints nothing new
        url = f"http://127.0.0.1:{settings.management_port}"
        assert (
            httpx.get(
                f"{url}/api/services", headers={"Authorization": f"Token {token}"}
            ).status_code
            == 200
        )
    assert "hrn_" not in capfd.readouterr().err


def test_admin_token_from_the_environment_is_kept_in_force(nats_url: str, tmp_path: Path) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'env.db'}"
    first, second = "first-admin-token-" + "x" * 20, "second-admin-token-" + "y" * 20
    for token, stale in ((first, None), (second, first)):
        settings = management_settings(database, nats_url, tmp_path, admin_token=token)
        with ServerThread(settings):
            url = f"http://127.0.0.1:{settings.management_port}/api/services"
            assert httpx.get(url, headers={"Authorization": f"Token {token}"}).status_code == 200
            if stale:
                assert (
                    httpx.get(url, headers={"Authorization": f"Token {stale}"}).status_code == 401
                )


def test_short_admin_token_is_refused_in_production() -> None:
    from heron_core.errors import ConfigError
    from heron_management.settings import ManagementSettings

    with pytest.raises(ConfigError, match="HERON_ADMIN_TOKEN is shorter"):
        ManagementSettings(mode="production", admin_token="short")  # type: ignore[arg-type]


def test_the_embedded_edge_token_is_kept_in_force_and_replaced(
    nats_url: str, tmp_path: Path
) -> None:
    database = f"sqlite+aiosqlite:///{tmp_path / 'edge.db'}"
    admin = "admin-token-" + "x" * 30
    first, second = generate_token(PROXY_TOKEN_PREFIX), generate_token(PROXY_TOKEN_PREFIX)
    for token, stale in ((first, None), (second, first), (None, second)):
        settings = management_settings(
            database, nats_url, tmp_path, admin_token=admin, management_edge_token=token
        )
        with ServerThread(settings):
            url = f"http://127.0.0.1:{settings.management_port}/api/proxy-tokens"
            listed = httpx.get(url, headers={"Authorization": f"Token {admin}"}).json()
            names = [t["name"] for t in listed]
            assert names == (["embedded edge"] if token else [])
            target = f"127.0.0.1:{settings.management_grpc_port}"
            if token:
                assert asyncio.run(edge_answer(target, token)) is None
            if stale:
                assert asyncio.run(edge_answer(target, stale)) is grpc.StatusCode.UNAUTHENTICATED


async def edge_answer(target: str, token: str) -> grpc.StatusCode | None:
    """None when an edge with ``token`` gets its setup, else the status its stream ends with."""
    async with Management(target) as management, management.edge_sync(token) as edge:
        try:
            first = await edge.read()
        except AssertionError as failed:  # the stream ended with an error status
            if not isinstance(failed.__cause__, grpc.aio.AioRpcError):
                raise
            return failed.__cause__.code()
        assert first.HasField("edge_setup")
        return None


@pytest.mark.parametrize("value", ["short", "hpx_" + "a" * 36, "x" * 40])
def test_an_edge_token_not_made_like_a_proxy_token_is_refused_in_production(value: str) -> None:
    from heron_core.errors import ConfigError
    from heron_management.settings import ManagementSettings

    with pytest.raises(ConfigError, match="HERON_MANAGEMENT_EDGE_TOKEN is not a proxy token"):
        ManagementSettings(mode="production", management_edge_token=value)  # type: ignore[arg-type]
    well_made = generate_token(PROXY_TOKEN_PREFIX)
    accepted = ManagementSettings(mode="production", management_edge_token=well_made)  # type: ignore[arg-type]
    assert accepted.management_edge_token is not None


def test_migrations_match_the_models(api: RunningApi) -> None:
    """The newest migration creates exactly the tables the code declares (on this backend)."""

    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))

    async def check() -> list[object]:
        engine = create_engine(api.database_url)
        try:
            await migrate(engine)  # idempotent on an up-to-date schema
            async with engine.connect() as connection:
                return await connection.run_sync(diff)
        finally:
            await engine.dispose()

    assert asyncio.run(check()) == []
