"""Overlay addresses: always inside 100.64.0.0/10, never the network or broadcast address, never
shared, even when logins race (the database's unique key decides; the loser proposes again)."""

import asyncio
import ipaddress
import random

import grpc
import pytest
from grpc import aio
from grpc_clients import Management, wireguard_key
from hypothesis import given
from hypothesis import strategies as st
from management_fixtures import RunningApi, call, seed_account
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from heron_management import agents
from heron_management.db.engine import create_engine, session_factory
from heron_management.db.tables import OverlayAddressRow
from heron_management.domain.overlay import (
    OVERLAY_NETWORK,
    candidate_addresses,
    check_wireguard_key,
    first_free_address,
    is_usable,
)
from heron_management.overlay import edge_address

CONCURRENT_LOGINS = 40


@given(st.integers(min_value=0, max_value=2**32))
def test_proposals_are_usable_overlay_addresses(seed: int) -> None:
    for address in candidate_addresses(random.Random(seed)):
        assert ipaddress.IPv4Address(address) in OVERLAY_NETWORK
        assert is_usable(address)


def test_the_network_and_broadcast_addresses_are_never_used() -> None:
    assert not is_usable("100.64.0.0") and not is_usable("100.127.255.255")
    assert is_usable("100.64.0.1") and is_usable("100.127.255.254")
    assert first_free_address([]) == "100.64.0.1"
    assert first_free_address(["100.64.0.1", "100.64.0.2", "100.64.0.9"]) == "100.64.0.3"
    assert first_free_address(["100.64.0.2", "100.64.0.1"]) == "100.64.0.3"
    assert first_free_address(["100.64.0.2"]) == "100.64.0.1"


@pytest.mark.parametrize(
    "key",
    [
        "",
        "abc",
        "A" * 44,
        "!" * 43 + "=",
        "AAAA" * 10 + "AAA=" + "A",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
    ],
)
def test_malformed_wireguard_keys_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="WireGuard"):
        check_wireguard_key(key)


def test_a_wireguard_key_is_44_base64_characters_of_32_bytes() -> None:
    key = wireguard_key()
    assert check_wireguard_key(key) == key


async def test_the_database_lets_one_holder_have_an_address(api: RunningApi) -> None:
    """Two transactions that both see an address free: the second to commit is refused."""
    engine = create_engine(api.database_url)
    sessions = session_factory(engine)
    seed = random.randrange(2**32)
    try:
        async with sessions() as first, sessions() as second:
            address = await edge_address(first, wireguard_key(), random.Random(seed))
            racing = asyncio.ensure_future(  # noqa: TID251  (awaited below)
                edge_address(second, wireguard_key(), random.Random(seed))
            )
            await asyncio.sleep(0.2)  # it proposes the same address, not yet committed
            await first.commit()
            with pytest.raises(IntegrityError):
                await racing  # its flush waited for the first commit, then was refused
    finally:
        await engine.dispose()
    assert is_usable(address)


async def test_a_login_that_loses_its_address_proposes_again(api: RunningApi) -> None:
    setup_key = (await secrets_of(api, setup_keys=1))[0]
    engine = create_engine(api.database_url)
    sessions = session_factory(engine)
    seed = random.randrange(2**32)
    proposal = candidate_addresses(random.Random(seed))[0]
    request = agents.LoginRequest(
        wireguard_public_key=wireguard_key(), hostname="late", version="t", setup_key=setup_key
    )
    try:
        async with sessions() as holder:
            # another transaction holds the login's first proposal, uncommitted
            holder.add(OverlayAddressRow(address=proposal, edge_public_key=wireguard_key()))
            await holder.flush()
            login = asyncio.ensure_future(  # noqa: TID251  (awaited below)
                agents.login(sessions, request, random.Random(seed))
            )
            await asyncio.sleep(0.2)
            await holder.commit()
        result = await login
    finally:
        await engine.dispose()
    assert result.overlay_address != proposal and is_usable(result.overlay_address)


async def test_a_crowded_overlay_falls_back_to_the_lowest_free_address(api: RunningApi) -> None:
    engine = create_engine(api.database_url)
    sessions = session_factory(engine)
    try:
        seed = random.randrange(2**32)
        proposals = candidate_addresses(random.Random(seed))
        async with sessions() as session:
            taken = set((await session.exec(select(OverlayAddressRow.address))).all())
            for address in set(proposals) - taken:
                session.add(OverlayAddressRow(address=address, edge_public_key=wireguard_key()))
            await session.commit()
            address = await edge_address(session, wireguard_key(), random.Random(seed))
            await session.commit()
        assert address not in proposals and is_usable(address)
        assert ipaddress.IPv4Address(address) < ipaddress.IPv4Address("100.64.1.0")
    finally:
        await engine.dispose()


async def test_many_concurrent_logins_never_share_an_address(api: RunningApi) -> None:
    account = await seed_account(api.database_url)
    async with api.async_client(account.tokens["owner"]) as owner:
        new_key = {"name": "fleet"}
        shared = (await call(owner, "POST", "/api/setup-keys", 201, new_key))["key"]
        own = [
            (await call(owner, "POST", "/api/setup-keys", 201, {"name": f"k{i}"}))["key"]
            for i in range(CONCURRENT_LOGINS // 2)
        ]
        async with Management(api.grpc_target) as management:
            logins = await asyncio.gather(
                *(management.login(setup_key=shared, hostname="node") for _ in own),
                *(
                    management.login(setup_key=key, hostname=f"solo-{i}")
                    for i, key in enumerate(own)
                ),
            )
        addresses = [login.overlay_address for login in logins]
        assert len(set(addresses)) == CONCURRENT_LOGINS
        assert all(is_usable(a) for a in addresses)
        peers = await call(owner, "GET", "/api/peers")
        named = [p["name"] for p in peers if p["hostname"] == "node"]
        assert len(named) == len(set(named)) == CONCURRENT_LOGINS // 2
        keys = await call(owner, "GET", "/api/setup-keys")
        assert [k["used_times"] for k in keys if k["name"] == "fleet"] == [CONCURRENT_LOGINS // 2]


async def test_an_edge_key_cannot_log_in_as_a_peer(api: RunningApi) -> None:
    key = wireguard_key()
    account = await seed_account(api.database_url)
    async with api.async_client(account.tokens["owner"]) as owner:
        proxy = (await call(owner, "POST", "/api/proxy-tokens", 201, {"name": "p"}))["plain_token"]
        setup = (await call(owner, "POST", "/api/setup-keys", 201, {"name": "k"}))["key"]
    async with Management(api.grpc_target) as management:
        async with management.edge_sync(proxy, key=key) as edge:
            await edge.read()
        with pytest.raises(aio.AioRpcError) as caught:
            await management.login(setup_key=setup, key=key)
    assert caught.value.code() is grpc.StatusCode.ALREADY_EXISTS


async def secrets_of(api: RunningApi, *, setup_keys: int) -> list[str]:
    account = await seed_account(api.database_url)
    async with api.async_client(account.tokens["owner"]) as owner:
        return [
            (await call(owner, "POST", "/api/setup-keys", 201, {"name": f"k{i}"}))["key"]
            for i in range(setup_keys)
        ]
