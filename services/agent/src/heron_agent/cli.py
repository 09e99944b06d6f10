"""The ``heron`` command: ``heron up`` keeps this peer's tunnel up, ``heron status`` shows it."""

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError

from heron_agent import __version__
from heron_agent.runner import UpOptions, run_until_signal
from heron_agent.settings import AgentSettings
from heron_agent.state import StateDir
from heron_core.errors import ConfigError
from heron_core.logging import configure_logging

app = typer.Typer(
    help="Heron's peer agent: publish services on this machine through Heron's edges.",
    no_args_is_help=True,
    add_completion=False,
)

StateDirOption = Annotated[
    Path | None,
    typer.Option(help="where the key, login and status live [env: HERON_AGENT_STATE_DIR]"),
]


def _settings() -> AgentSettings:
    try:
        return AgentSettings()
    except (ConfigError, ValidationError) as exc:
        typer.echo(f"heron: {exc}", err=True)
        raise typer.Exit(2) from exc


@app.command()
def up(
    management: Annotated[
        str | None,
        typer.Option(help="management's gRPC URL, e.g. https://heron.example.com:50051"),
    ] = None,
    setup_key: Annotated[
        str | None,
        typer.Option(help="a setup key from /api/setup-keys (first login only)"),
    ] = None,
    state_dir: StateDirOption = None,
    interface: Annotated[
        str | None, typer.Option(help="the WireGuard interface's name [default: heron0]")
    ] = None,
) -> None:
    """Log this peer in and keep its tunnel up, in the foreground, until Ctrl-C."""
    settings = _settings()
    configure_logging("agent", level=settings.log_level, fmt=settings.log_format)
    options = UpOptions(
        state_dir=state_dir or settings.agent_state_dir,
        interface=interface or settings.agent_interface,
        management_url=management or settings.agent_management_url,
        setup_key=setup_key or (
            settings.agent_setup_key.get_secret_value() if settings.agent_setup_key else None
        ),
        wireguard_port=settings.agent_wireguard_port or None,
        forwarder_port=settings.agent_forwarder_port,
        tcp_fast_open=settings.agent_tcp_fast_open,
    )  # fmt: skip
    raise typer.Exit(run_until_signal(options))


@app.command()
def status(
    state_dir: StateDirOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the raw status")] = False,
) -> None:
    """Show this peer's login, tunnel and handshakes, as the running agent last saw them."""
    directory = state_dir or _settings().agent_state_dir
    data = StateDir(directory).load_status()
    if data is None:
        typer.echo(f"no agent has run with state in {directory} (start one with heron up)")
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    running = data.get("state") != "stopped" and _alive(int(data.get("pid", 0)))
    typer.echo(_describe(data, running=running))
    raise typer.Exit(0 if running and data.get("state") == "connected" else 3)


@app.command()
def version() -> None:
    """Print the agent's version."""
    typer.echo(__version__)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(data: dict[str, Any], *, running: bool) -> str:
    state = data.get("state", "?") if running else "not running"
    lines = [
        f"agent:       {state}{' - ' + data['detail'] if data.get('detail') else ''}",
        f"management:  {data.get('management_url') or '-'}",
        f"peer:        {data.get('peer_id') or '-'}",
        f"overlay:     {data.get('overlay_address') or '-'} on {data.get('interface') or '-'}",
        f"sync:        {'connected' if data.get('sync_connected') and running else 'down'}",
        f"targets:     {data.get('allowed_targets', 0)} allowed",
        f"updated:     {data.get('updated_at', '-')}{_ago(data.get('updated_at'))}",
    ]
    edges = data.get("edges") or []
    if not edges:
        lines.append("edges:       none yet")
    for edge in edges:
        age = edge.get("handshake_age_s")
        handshake = "no handshake yet" if age is None else f"handshake {age:.0f} s ago"
        lines.append(
            f"edge:        {edge.get('endpoint') or '?'} ({edge.get('overlay_address')}), "
            f"{handshake}"
        )
    return "\n".join(lines)


def _ago(stamp: object) -> str:
    if not isinstance(stamp, str):
        return ""
    try:
        seconds = (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds()
    except ValueError:
        return ""
    return f" ({seconds:.0f} s ago)"


def main() -> None:
    app()
