"""Overlay addresses in the database: one per peer, one per edge WireGuard key, never shared.

The primary key of ``overlay_addresses`` decides: a proposal another transaction took first
fails the caller's commit with ``IntegrityError``, and the caller retries its whole transaction
(``agents.login``, ``edges.register_edge``), which proposes again.
"""

import random

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_management.db.tables import OverlayAddressRow, PeerRow
from heron_management.domain.overlay import (
    candidate_addresses,
    first_free_address,
    pick_free,
)
from heron_management.errors import ConflictError


async def assign_peer_address(session: AsyncSession, peer: PeerRow, rng: random.Random) -> str:
    """Give ``peer`` (flushed, without an address) a free address in the caller's transaction."""
    address = await _free_address(session, rng)
    session.add(OverlayAddressRow(address=address, peer_id=peer.id))
    peer.overlay_address = address
    session.add(peer)
    await session.flush()
    return address


async def edge_address(session: AsyncSession, public_key: str, rng: random.Random) -> str:
    """The address of the edge WireGuard key ``public_key``: the one it has, or a new one."""
    held = (
        await session.exec(
            select(OverlayAddressRow.address).where(OverlayAddressRow.edge_public_key == public_key)
        )
    ).first()
    if held is not None:
        return held
    address = await _free_address(session, rng)
    session.add(OverlayAddressRow(address=address, edge_public_key=public_key))
    await session.flush()
    return address


async def _free_address(session: AsyncSession, rng: random.Random) -> str:
    candidates = candidate_addresses(rng)
    taken = set(
        (
            await session.exec(
                select(OverlayAddressRow.address).where(
                    col(OverlayAddressRow.address).in_(candidates)
                )
            )
        ).all()
    )
    address = pick_free(candidates, taken)
    if address is not None:
        return address
    # all proposals taken: the overlay is crowded, so look at every address once
    everything = set((await session.exec(select(OverlayAddressRow.address))).all())
    address = first_free_address(everything)
    if address is None:
        raise ConflictError("the overlay network 100.64.0.0/10 has no free address left")
    return address
