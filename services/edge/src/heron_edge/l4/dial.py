"""Opening the tunnel stream of an L4 connection or session: the balancer's order, failures
ejected, the first target that answers wins."""

import socket

import structlog

from heron_edge.connector import TunnelError, open_stream
from heron_edge.l4.context import L4Context
from heron_edge.routes import Route, RouteTarget

log = structlog.get_logger("heron_edge.l4")


class NoTargetError(Exception):
    """No enabled target of the service could be reached; ``failures`` says why for each."""

    def __init__(self, failures: list[str]) -> None:
        super().__init__("; ".join(failures))
        self.failures = failures


#: why a connection or session had no target to try at all
NO_ENABLED_TARGET = "the service has no enabled target"


async def dial(
    ctx: L4Context, route: Route, client: tuple[str, int]
) -> tuple[RouteTarget, socket.socket]:
    """A target of ``route`` and a stream to it through the tunnel; the caller closes it."""
    failures: list[str] = []
    for target in ctx.balancer.order(route):
        try:
            stream = await open_stream(
                target.stream, client, answer_timeout_s=ctx.limits.dial_timeout(target)
            )
        except TunnelError as exc:
            target_failed(ctx, route, target, exc, failures)
            continue
        ctx.balancer.succeeded(route, target)
        return target, stream
    raise NoTargetError(failures or [NO_ENABLED_TARGET])


def target_failed(
    ctx: L4Context, route: Route, target: RouteTarget, exc: TunnelError, failures: list[str]
) -> None:
    """``target``'s stream could not be opened: noted in ``failures``, ejected, logged."""
    failures.append(f"{target.id}: {exc.message}")
    ejected_s = ctx.balancer.failed(route, target)
    log.warning(
        "target failed, tried later for a while",
        service_id=route.id, target=target.id, error=exc.message, ejected_s=ejected_s,
    )  # fmt: skip
