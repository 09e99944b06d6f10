"""Where a service goes: its cluster, from its domain and the account's clusters and custom
domains (the rules: ``domain.custom_domains.place``), or why its domain may not be used.

The rules bind a domain when a service takes it (created, or moved to it). A service that keeps
its domain keeps its cluster even when that domain would no longer be accepted (its custom
domain failed a later verification, or the account set up its first cluster after the service
was made): it may still be edited, disabled, or moved to an accepted domain.
"""

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_management.db.tables import CustomDomainRow
from heron_management.domain.clusters import Cluster
from heron_management.domain.custom_domains import CustomDomain, place
from heron_management.errors import FieldProblem, InvalidRequestError
from heron_management.proxy_clusters import account_clusters


async def place_service(
    session: AsyncSession, account_id: str, domain: str, current: str | None, *, new_domain: bool
) -> Cluster | None:
    """The cluster that serves ``domain`` (None: none yet); ``current``: the service's cluster
    so far, which it keeps when its edges are no longer on record. ``new_domain``: the service
    takes ``domain`` now, so it must be accepted (else ``InvalidRequestError`` on ``domain``)."""
    clusters = {c.address: c for c in await account_clusters(session, account_id)}
    known = [*clusters, *([current] if current and current not in clusters else [])]
    placement = place(domain, known, await account_custom_domains(session, account_id))
    if placement.problem is not None and new_domain:
        raise InvalidRequestError([FieldProblem(("domain",), placement.problem)])
    address = placement.cluster or (None if new_domain else current)
    if address is None:
        return None
    return clusters.get(address) or Cluster(address)


async def account_custom_domains(session: AsyncSession, account_id: str) -> list[CustomDomain]:
    rows = await session.exec(
        select(CustomDomainRow).where(CustomDomainRow.account_id == account_id)
    )
    return [CustomDomain(r.domain, r.target_cluster, r.validated) for r in rows]
