"""L4 listen ports: a requested port checked, or a free one assigned, within the service's cluster.

A port is unique per (cluster, transport, port), except where ``domain.ports`` lets two modes
share it; services of different clusters may use the same port. The cluster is its address, not
the account's: one address names one set of machines, so two accounts whose edges claim the same
address share its ports. A service with no cluster yet (its domain is under no proxy domain of
the account's edges) may end up in any cluster, so it competes with every service, and every
service with it.

A requested (custom) port needs a cluster that supports custom ports (``domain.clusters``);
otherwise the request is refused and the caller leaves the port to the auto-assign range.
"""

from sqlalchemy import or_
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from heron_core.types import ServiceMode
from heron_management.db.tables import ServiceRow
from heron_management.domain.clusters import Cluster
from heron_management.domain.ports import (
    AUTO_PORT_RANGE,
    MAIN_PORT,
    may_share_port,
    pick_free_port,
    reserved_port,
    transport_of,
)
from heron_management.domain.service_spec import ServiceSpec
from heron_management.errors import ConflictError, FieldProblem, InvalidRequestError

_AUTO_RANGE = f"{AUTO_PORT_RANGE.start}-{AUTO_PORT_RANGE.stop - 1}"


async def assign_port(
    session: AsyncSession, row: ServiceRow, spec: ServiceSpec, cluster: Cluster | None
) -> None:
    """Set ``row``'s listen port for ``spec`` in ``cluster`` (None: unknown), before ``row``
    takes ``spec``'s other fields: it still holds the stored service, if any."""
    if spec.listen_port is None:
        row.listen_port, row.port_auto_assigned = None, False
        return
    if spec.mode is ServiceMode.TLS and spec.listen_port in (0, MAIN_PORT):
        row.listen_port, row.port_auto_assigned = 0, False  # the main port, routed by SNI
        return
    neighbours = await _same_transport(session, row, spec.mode, cluster)
    if requested := spec.listen_port:
        kept = _keeps_its_port(row, spec, cluster)
        _check_requested(row, spec.mode, requested, cluster, neighbours, kept=kept)
        row.port_auto_assigned = row.port_auto_assigned and kept  # a GET put back stays auto
        row.listen_port = requested
        return
    taken = {other.listen_port for other in neighbours if other.listen_port}
    keep = row.port_auto_assigned and row.listen_port and ServiceMode(row.mode) is spec.mode
    if keep and row.listen_port not in taken:
        return  # an update keeps the port it was given
    port = pick_free_port(taken)
    if port is None:
        where = f" of cluster {cluster.address!r}" if cluster else ""
        raise ConflictError(
            f"no free {transport_of(spec.mode)} port left{where} in the auto-assign range "
            f"{_AUTO_RANGE}"
        )
    row.listen_port, row.port_auto_assigned = port, True


def _check_requested(
    row: ServiceRow,
    mode: ServiceMode,
    port: int,
    cluster: Cluster | None,
    neighbours: list[ServiceRow],
    *,
    kept: bool,
) -> None:
    if reserved := reserved_port(mode, port):
        raise InvalidRequestError([FieldProblem(("listen_port",), f"port {port} is {reserved}")])
    # An unknown cluster (no edge of it on record) accepts the port: services are often made
    # before their edges connect, and an edge supports custom ports unless configured not to.
    # NetBird refuses there, but its domains cannot exist without a cluster; ours can.
    if cluster is not None and cluster.known and not cluster.supports_custom_ports and not kept:
        raise InvalidRequestError(
            [
                FieldProblem(
                    ("listen_port",),
                    f"cluster {cluster.address!r} assigns L4 ports itself: its edges do not "
                    "support custom ports; leave listen_port out (or 0) to get one from "
                    f"{_AUTO_RANGE}",
                )
            ]
        )
    for other in neighbours:
        if other.listen_port == port and not may_share_port(ServiceMode(other.mode), mode):
            raise ConflictError(
                f"{transport_of(mode)} port {port} is held by {_holder(other, row)}"
            )


def _keeps_its_port(row: ServiceRow, spec: ServiceSpec, cluster: Cluster | None) -> bool:
    """Whether an update asks for the port the service already has where it already is: not a
    new choice, so a cluster without custom ports lets it be (a GET put back must work). A
    cluster learnt for the same domain (an edge came) is where the service already was."""
    if row.listen_port != spec.listen_port or ServiceMode(row.mode) is not spec.mode:
        return False
    address = cluster.address if cluster else None
    return row.proxy_cluster == address or (row.proxy_cluster is None and row.domain == spec.domain)


def _holder(other: ServiceRow, row: ServiceRow) -> str:
    if other.account_id != row.account_id:
        return "a service of another account"
    where = f" in cluster {other.proxy_cluster!r}" if other.proxy_cluster else ""
    return f"service {other.name!r} ({other.id}){where}"


async def _same_transport(
    session: AsyncSession, row: ServiceRow, mode: ServiceMode, cluster: Cluster | None
) -> list[ServiceRow]:
    """The other services with a port that ``row`` competes with: in its cluster or without one
    (all of them, when its own cluster is unknown), on the same transport."""
    query = select(ServiceRow).where(
        col(ServiceRow.listen_port).is_not(None), ServiceRow.id != row.id
    )
    if cluster is not None:
        query = query.where(
            or_(
                col(ServiceRow.proxy_cluster).is_(None),
                col(ServiceRow.proxy_cluster) == cluster.address,
            )
        )
    others = (await session.exec(query)).all()
    return [o for o in others if transport_of(ServiceMode(o.mode)) == transport_of(mode)]
