"""The attempt counters on their own: keys NATS accepts, doubling lockouts, racing replicas."""

import asyncio

import pytest

from heron_authgateway.attempts import AttemptPolicy, Attempts, address_key, service_key
from heron_bus.bucket import Bucket
from heron_bus.connection import Bus
from heron_bus.kv import AUTH_ATTEMPTS

POLICY = AttemptPolicy(
    max_failures=3, window_s=60, lockout_s=10, lockout_cap_s=35, service_max_failures=1000
)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("203.0.113.9", "svc_a.addr.203.0.113.9"),
        ("2001:db8:1:2:3:4:5:6", "svc_a.addr.2001_db8_1_2__-64"),
        ("[2001:db8:1:2::7]", "svc_a.addr.2001_db8_1_2__-64"),
        ("::ffff:192.0.2.1", "svc_a.addr.192.0.2.1"),
        ("fe80::1%eth0", "svc_a.addr.fe80__-64"),
    ],
)
def test_address_keys_are_valid_nats_keys(address: str, expected: str) -> None:
    assert address_key("svc_a", address) == expected


def test_odd_values_become_digests() -> None:
    assert address_key("svc_a", "not an ip").startswith("svc_a.addr.h-")
    assert service_key("svc a/../x").startswith("h-")


async def test_lockouts_double_up_to_the_cap_and_a_success_forgets(bus: Bus) -> None:
    clock = Clock()
    attempts = Attempts(await Bucket.open(bus, AUTH_ATTEMPTS), POLICY, clock=clock)
    lengths = []
    for _ in range(4):
        verdicts = [await attempts.admit("svc_a", "192.0.2.1") for _ in range(3)]
        assert all(v.admitted for v in verdicts)
        lengths.append(verdicts[-1].locks_until - clock.now)
        refused = await attempts.admit("svc_a", "192.0.2.1")
        assert not refused.admitted and refused.locked_until == verdicts[-1].locks_until
        clock.now = refused.locked_until
    assert lengths == [10, 20, 35, 35]
    await attempts.succeeded("svc_a", "192.0.2.1")
    verdicts = [await attempts.admit("svc_a", "192.0.2.1") for _ in range(3)]
    assert verdicts[-1].locks_until - clock.now == 10


async def test_failures_outside_the_window_are_forgotten(bus: Bus) -> None:
    clock = Clock()
    attempts = Attempts(await Bucket.open(bus, AUTH_ATTEMPTS), POLICY, clock=clock)
    for _ in range(2):
        await attempts.admit("svc_a", "192.0.2.1")
    clock.now += 61
    verdicts = [await attempts.admit("svc_a", "192.0.2.1") for _ in range(2)]
    assert not any(v.locks_until for v in verdicts)


async def test_parallel_tries_of_two_replicas_never_pass_the_limit(bus: Bus) -> None:
    replicas = [Attempts(await Bucket.open(bus, AUTH_ATTEMPTS), POLICY) for _ in range(2)]
    verdicts = await asyncio.gather(
        *(replicas[n % 2].admit("svc_a", "192.0.2.1") for n in range(12))
    )
    assert sum(v.admitted for v in verdicts) == POLICY.max_failures
