"""Custom domains: which domains a service may use, which cluster serves it, and the DNS record
that proves a custom domain belongs to the account.

A service's domain is *placed* (``place``) in this order, as NetBird does:

1. the domain is a cluster address of the account or under one: that cluster (the longest);
2. else it is a custom domain of the account or under one: the longest such custom domain's
   ``target_cluster`` once it is verified; not yet verified: refused, naming the record;
3. else refused, naming the custom domain to add and its record — unless the account has no
   cluster yet (no edge on record: a new installation, or before its first edge connects):
   then any domain is accepted and the service waits without a cluster, to join the first one
   whose address is a parent of its domain or a custom domain's target once verified.

Verification: the account creates ``validation.<custom domain>`` as a CNAME to the target
cluster's address; management follows the CNAME chain from that name and accepts it when the
chain reaches the address (a cluster address that is itself a CNAME still verifies: NetBird
compares only the chain's end, its issue #5506).
"""

from collections.abc import Sequence
from dataclasses import dataclass

from heron_management.domain.clusters import cluster_of

#: the label the validation CNAME is created under
VALIDATION_LABEL = "validation"


@dataclass(frozen=True)
class CustomDomain:
    domain: str
    target_cluster: str
    validated: bool


@dataclass(frozen=True)
class Placement:
    """Where a service's domain goes: a cluster address (None: no cluster yet) or why it may
    not be used (``problem``)."""

    cluster: str | None
    problem: str | None = None


@dataclass(frozen=True)
class CnameChain:
    """What DNS says about ``name``: the CNAME targets in order (each without its trailing dot),
    or that the name does not exist at all."""

    name: str
    targets: tuple[str, ...] = ()
    exists: bool = True


def validation_name(domain: str) -> str:
    """The name whose CNAME proves ``domain`` is the account's."""
    return f"{VALIDATION_LABEL}.{domain}"


def covers(parent: str, domain: str) -> bool:
    """``domain`` is ``parent`` or a name under it (at a label boundary)."""
    return domain == parent or domain.endswith(f".{parent}")


def covering(domain: str, customs: Sequence[CustomDomain]) -> CustomDomain | None:
    """The longest custom domain that covers ``domain``."""
    return max(
        (c for c in customs if covers(c.domain, domain)), key=lambda c: len(c.domain), default=None
    )


def place(domain: str, clusters: Sequence[str], customs: Sequence[CustomDomain]) -> Placement:
    """Where ``domain`` goes, given the account's cluster addresses and custom domains."""
    if (address := cluster_of(domain, clusters)) is not None:
        return Placement(address)
    custom = covering(domain, customs)
    if custom is not None:
        if custom.validated:
            return Placement(custom.target_cluster)
        record = _record(custom.domain, custom.target_cluster)
        return Placement(
            None,
            f"custom domain {custom.domain!r} is not verified yet: create the DNS record "
            f"{record}, then validate it (POST /api/domains/{{id}}/validate)",
        )
    if not clusters:
        return Placement(None)  # no cluster yet: the service waits for its first one
    parent = suggested_custom_domain(domain)
    target = min(clusters)
    listed = ", ".join(repr(c) for c in sorted(set(clusters)))
    return Placement(
        None,
        f"{domain!r} is under none of this account's cluster domains ({listed}) and under no "
        f"verified custom domain: use a name under a cluster domain, or add {parent!r} as a "
        f"custom domain (POST /api/domains) and create the DNS record {_record(parent, target)}",
    )


def suggested_custom_domain(domain: str) -> str:
    """The custom domain to suggest for ``domain``: its parent, unless that is a bare TLD."""
    parent = domain.partition(".")[2]
    return parent if "." in parent else domain


def verdict(chain: CnameChain, cluster: str) -> str | None:
    """Why ``chain`` does not verify a custom domain targeting ``cluster`` (None: it does)."""
    if cluster in chain.targets:
        return None
    if not chain.exists:
        return f"{chain.name} does not exist in DNS: create the record {_record_for(chain.name, cluster)}"
    if not chain.targets:
        return f"{chain.name} has no CNAME record: create one pointing at {cluster}"
    reason = f"{chain.name} points at {chain.targets[0]}, not {cluster}"
    if len(chain.targets) > 1:
        hops = " → ".join((chain.name, *chain.targets))
        reason += f" (the chain {hops} never reaches {cluster})"
    return reason


def _record(domain: str, cluster: str) -> str:
    return _record_for(validation_name(domain), cluster)


def _record_for(name: str, cluster: str) -> str:
    return f"{name} CNAME {cluster}"
