"""TCP Fast Open between the edge's ``open_stream`` and the agent's forwarder, counted by the
kernel, in a network namespace of its own (the agent sets ``net.ipv4.tcp_fastopen`` there)."""

import json
import sys
from pathlib import Path

from heron_tunnel.netns import Namespace

PROBE = Path(__file__).with_name("fast_open_probe.py")


async def probe(fast_open: str) -> dict[str, object]:
    async with Namespace.unique("hfo") as ns:
        await ns.run("ip", "link", "set", "lo", "up")
        done = await ns.run(sys.executable, str(PROBE), fast_open, timeout_s=60)
    result: dict[str, object] = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return result


async def test_after_the_first_stream_the_header_rides_on_the_syn() -> None:
    result = await probe("on")
    assert result["replies"] == ["stream 0\n", "stream 1\n", "stream 2\n"]
    assert result["sysctl"] == 3  # the agent turned the listener bit on
    # the first stream asked for a cookie with an ordinary handshake; the others sent their
    # header with the SYN and the cookie
    assert result["cookie_requests"] == 1, result
    assert result["passive"] == 2, result
    assert result["active"] == 2, result
    # a SYN with the header and a cookie that nobody answers is still a connect timeout
    unanswered = str(result["unanswered"])
    assert unanswered.startswith("CONNECT_TIMEOUT after 0.5 s"), unanswered
    assert "did not answer within 0.5 s" in unanswered
    short = str(result["unanswered_short"])
    assert short.startswith("CONNECT_TIMEOUT after 0.3 s"), short


async def test_without_fast_open_every_stream_shakes_hands_first() -> None:
    result = await probe("off")
    assert result["replies"] == ["stream 0\n", "stream 1\n", "stream 2\n"]
    assert result["sysctl"] == 1  # the kernel's default, left alone
    assert result["passive"] == 0
    assert str(result["unanswered"]).startswith("CONNECT_TIMEOUT"), result
