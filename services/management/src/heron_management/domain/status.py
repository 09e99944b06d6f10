"""A service's status, derived from what its edges report, with a reason a person can act on.

Edges send a ``ServiceStatus`` per service (tunnel up, certificate available, error message);
``derive_status`` turns the last reports of the connected edges into ``meta.status``:

1. disabled, or no enabled target: ``pending`` (nothing to serve);
2. no edge connected: ``pending`` (no edge of the cluster is connected, or none ever was);
3. no connected edge has reported on the service yet: ``pending`` (waiting for a report);
4. some edge *serves* it — tunnel up, no error, and (HTTP only: the edge terminates TLS) a
   certificate for the domain: ``active``;
5. otherwise, the most advanced edge decides: tunnel up but no certificate:
   ``certificate_pending`` — or ``certificate_failed`` with the CA's reason when the certificate
   manager's last word is a failure (``domain.certificates``); tunnel up but an error (e.g. its
   port is taken): ``error``; no tunnel anywhere: ``tunnel_not_created`` — the reason names
   that edge and quotes its message.

One serving edge is enough: clients reach any edge of the cluster, and those without a tunnel
say why in the logs. A certificate failure shows only where the certificate is what is missing:
an edge that still holds a valid certificate keeps the service ``active`` (a failed renewal),
and a tunnel that is down is the first thing to fix. As in NetBird, edges never report
``certificate_failed`` themselves: the certificate manager does, through its events.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from heron_core.types import ServiceMode, ServiceStatus
from heron_management.domain.certificates import CertificateFailure, failure_reason


@dataclass(frozen=True)
class EdgeReport:
    """What one connected edge last reported about a service."""

    edge: str  # the edge's instance ID, to name it in reasons
    tunnel_up: bool
    certificate_available: bool
    error_message: str


@dataclass(frozen=True)
class ServiceFacts:
    """Everything a service's status depends on."""

    domain: str
    mode: ServiceMode
    enabled: bool
    enabled_targets: int
    #: the service's cluster; None while its domain falls under no cluster of the account
    proxy_cluster: str | None = None
    #: proxy domains of the edges that serve the service and are connected now
    connected_clusters: Sequence[str] = ()
    #: proxy domains of every edge that serves the service and was seen lately
    known_clusters: Sequence[str] = ()
    #: the last report of each connected edge that has reported on the service
    reports: Sequence[EdgeReport] = ()
    #: the certificate manager's last word, when it is a failure (HTTP only)
    certificate_failure: CertificateFailure | None = None


def needs_certificate(mode: ServiceMode) -> bool:
    """HTTP services are terminated at the edge; TLS passes through, TCP/UDP carry no TLS."""
    return mode is ServiceMode.HTTP


def derive_status(facts: ServiceFacts) -> tuple[ServiceStatus, str | None]:
    """The service's status and its reason (None when active)."""
    unseen = not facts.known_clusters and facts.proxy_cluster is None
    if not facts.enabled or facts.enabled_targets == 0 or unseen:
        return initial_status(
            domain=facts.domain,
            enabled=facts.enabled,
            proxy_cluster=facts.proxy_cluster,
            enabled_targets=facts.enabled_targets,
        )
    if not facts.connected_clusters:
        cluster = _cluster(facts.proxy_cluster, facts.known_clusters)
        return ServiceStatus.PENDING, f"no edge of cluster {cluster} is connected"
    if not facts.reports:
        cluster = _cluster(facts.proxy_cluster, facts.connected_clusters)
        return ServiceStatus.PENDING, f"waiting for an edge of cluster {cluster} to report"
    return _from_reports(facts)


def _from_reports(facts: ServiceFacts) -> tuple[ServiceStatus, str | None]:
    certificate = needs_certificate(facts.mode)
    reports = sorted(facts.reports, key=lambda r: r.edge)
    up = [r for r in reports if r.tunnel_up]
    working = [r for r in up if not r.error_message]
    if any(r.certificate_available or not certificate for r in working):
        return ServiceStatus.ACTIVE, None
    if working and facts.certificate_failure is not None:
        return (
            ServiceStatus.CERTIFICATE_FAILED,
            failure_reason(facts.domain, facts.certificate_failure),
        )
    if working:
        return (
            ServiceStatus.CERTIFICATE_PENDING,
            f"the tunnel is up at edge {working[0].edge!r}, but no edge has a certificate for "
            f"{facts.domain!r} yet",
        )
    if up:
        return ServiceStatus.ERROR, f"edge {up[0].edge!r}: {up[0].error_message}"
    failing = next((r for r in reports if r.error_message), reports[0])
    message = failing.error_message or "no tunnel to the peer of any enabled target"
    return ServiceStatus.TUNNEL_NOT_CREATED, f"edge {failing.edge!r}: {message}"


def _cluster(proxy_cluster: str | None, domains: Sequence[str]) -> str:
    if proxy_cluster is not None:
        return repr(proxy_cluster)
    return " or ".join(repr(d) for d in sorted(set(domains)))


def initial_status(
    *, domain: str, enabled: bool, proxy_cluster: str | None, enabled_targets: int
) -> tuple[ServiceStatus, str]:
    """Why a service that no edge has reported on is ``pending``."""
    if not enabled:
        return ServiceStatus.PENDING, "the service is disabled"
    if enabled_targets == 0:
        return ServiceStatus.PENDING, "the service has no enabled target: it routes nothing yet"
    if proxy_cluster is None:
        return (
            ServiceStatus.PENDING,
            f"no edge cluster serves {domain!r} yet: connect an edge whose proxy domain is a "
            "parent of it, or add it as a custom domain",
        )
    return ServiceStatus.PENDING, f"waiting for an edge of cluster {proxy_cluster!r} to report"
