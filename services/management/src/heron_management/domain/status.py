"""Why a service is not serving yet, in words a person can act on.

Edges report tunnel state and the certificate manager reports certificates in later slices;
until a fact says otherwise a service is ``pending`` and this reason says what it waits for.
"""

from heron_core.types import ServiceStatus


def initial_status(
    *, domain: str, enabled: bool, proxy_cluster: str | None, enabled_targets: int
) -> tuple[ServiceStatus, str]:
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
