"""``heron up``'s retry of a WireGuard interface that does not come up."""

from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from heron_agent import runner
from heron_agent.runner import AgentStoppedError, UpOptions, _Agent, _bring_up
from heron_agent.state import StateDir
from heron_core.backoff import Backoff
from heron_tunnel.wireguard import WireGuardError

if TYPE_CHECKING:
    from heron_agent.tunnel import AgentTunnel


class _FlakyTunnel:
    """``up`` fails ``failures`` times (as wireguard-go does when its socket directory is
    pulled from under it), then works."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.tries = 0

    async def up(self) -> None:
        self.tries += 1
        if self.tries <= self.failures:
            raise WireGuardError("wireguard-go exited with 1 while starting: uapi socket")


def _agent(tmp_path: Path) -> _Agent:
    state = StateDir(tmp_path)
    state.prepare()
    return _Agent(UpOptions(state_dir=tmp_path, interface="hbtest0"), state)


def _quick() -> Backoff:
    return Backoff(initial_s=0.001, max_s=0.001, reset_after_s=60.0)


async def test_a_tunnel_that_fails_for_a_moment_comes_up_on_a_later_try(tmp_path: Path) -> None:
    agent, tunnel = _agent(tmp_path), _FlakyTunnel(failures=2)
    await _bring_up(agent, cast("AgentTunnel", tunnel), _quick())
    assert tunnel.tries == 3
    assert "retrying" in agent.status.detail


async def test_a_tunnel_that_never_comes_up_stops_the_agent_with_why(tmp_path: Path) -> None:
    agent, tunnel = _agent(tmp_path), _FlakyTunnel(failures=100)
    with pytest.raises(AgentStoppedError, match="did not come up in 5 tries: wireguard-go exited"):
        await _bring_up(agent, cast("AgentTunnel", tunnel), _quick())
    assert tunnel.tries == runner.TUNNEL_UP_ATTEMPTS
    assert agent.status.state == "stopped"
