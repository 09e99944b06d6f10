"""The agent's files and ``heron status``, as a user on the machine sees them."""

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from heron_agent.allowed import AllowedTarget, AllowedTargets, canonical_host
from heron_agent.cli import app
from heron_agent.state import EdgeStatus, Login, StateDir, Status, now_iso
from heron_core.errors import ConfigError
from heron_tunnel.header import Protocol


def test_login_is_private_and_round_trips(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "agent")
    state.prepare()
    login = Login("http://m:50051", "peer_1", "100.64.0.7", "100.64.0.0/10", "secret")
    state.save_login(login)
    assert state.load_login() == login
    assert (state.path / "login.json").stat().st_mode & 0o777 == 0o600
    assert state.path.stat().st_mode & 0o777 == 0o700


def test_a_state_dir_others_can_read_is_refused(tmp_path: Path) -> None:
    directory = tmp_path / "open"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    with pytest.raises(ConfigError, match="chmod 700"):
        StateDir(directory).prepare()


def test_a_damaged_login_file_says_what_to_do(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "agent")
    state.prepare()
    (state.path / "login.json").write_text("{not json")
    with pytest.raises(ConfigError, match="--setup-key"):
        state.load_login()


def test_status_prints_the_tunnel(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "agent")
    state.prepare()
    state.save_status(
        Status(
            state="connected", detail="", updated_at=now_iso(), pid=os.getpid(),
            management_url="http://m:50051", peer_id="peer_1", overlay_address="100.64.0.7",
            interface="heron0", sync_connected=True, allowed_targets=3,
            edges=(EdgeStatus("KEY", "edge.example.com:51820", "100.64.0.1", 4.2),),
        )
    )  # fmt: skip
    result = CliRunner().invoke(app, ["status", "--state-dir", str(state.path)])
    assert result.exit_code == 0, result.output
    assert "connected" in result.output
    assert "100.64.0.7 on heron0" in result.output
    assert "edge.example.com:51820 (100.64.0.1), handshake 4 s ago" in result.output
    as_json = CliRunner().invoke(app, ["status", "--json", "--state-dir", str(state.path)])
    assert json.loads(as_json.output)["peer_id"] == "peer_1"


def test_status_of_an_agent_that_is_gone(tmp_path: Path) -> None:
    state = StateDir(tmp_path / "agent")
    state.prepare()
    state.save_status(
        Status(state="connected", detail="", updated_at=now_iso(), pid=2**22 + 1,
               management_url="http://m:50051")
    )  # fmt: skip
    result = CliRunner().invoke(app, ["status", "--state-dir", str(state.path)])
    assert result.exit_code == 3
    assert "not running" in result.output


def test_status_without_any_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["status", "--state-dir", str(tmp_path / "none")])
    assert result.exit_code == 1
    assert "heron up" in result.output


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [("::ffff:127.0.0.1", "127.0.0.1"), ("App.Example.COM.", "app.example.com"),
     ("2001:DB8::1", "2001:db8::1")],
)  # fmt: skip
def test_hosts_compare_in_one_spelling(spelling: str, canonical: str) -> None:
    assert canonical_host(spelling) == canonical
    allowed = AllowedTargets([AllowedTarget.of(canonical, 80, Protocol.TCP)])
    assert allowed.permits(spelling, 80, Protocol.TCP)
    assert not allowed.permits(spelling, 81, Protocol.TCP)
    assert not allowed.permits(spelling, 80, Protocol.UDP)
