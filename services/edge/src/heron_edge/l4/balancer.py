"""Which target takes the next connection: round-robin over the enabled targets, with passive
ejection.

A target whose tunnel stream cannot be opened (its agent is down, the target refuses or does
not answer) is *ejected*: for a while it goes to the back of the order, so the next
connections try the healthy ones first rather than paying a timeout each. An ejected target is
still tried last — when every target is ejected the service keeps trying rather than refusing
everyone — and the first success restores it. Each ejection of the same target doubles its
time out, up to a bound; a success resets it. The state is per process and keyed by service
and target, so a table rebuild keeps it and a removed target's entry ages out.
"""

import itertools
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from heron_edge.routes import Route, RouteTarget

#: first time out after a failure, and the bound it doubles up to
EJECT_BASE_S = 5.0
EJECT_MAX_S = 60.0


@dataclass(slots=True)
class _Ejection:
    until: float
    failures: int


class Balancer:
    """Picks targets for connections of every L4 service of one process."""

    def __init__(
        self,
        *,
        base_s: float = EJECT_BASE_S,
        max_s: float = EJECT_MAX_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._base_s = base_s
        self._max_s = max_s
        self._clock = clock
        self._turns: dict[str, itertools.count[int]] = {}
        self._ejected: dict[tuple[str, str], _Ejection] = {}

    def order(self, route: Route) -> list[RouteTarget]:
        """The enabled targets of ``route`` in the order to try them: the next in turn first,
        ejected ones last (the one whose time out ends soonest first)."""
        targets: Sequence[RouteTarget] = [t for t in route.targets if t.enabled]
        if len(targets) <= 1:
            return list(targets)
        turn = next(self._turns.setdefault(route.id, itertools.count()))
        start = turn % len(targets)
        rotated = [*targets[start:], *targets[:start]]
        if not self._ejected:
            return rotated
        now = self._clock()
        healthy, ejected = [], []
        for target in rotated:
            ejection = self._ejected.get((route.id, target.id))
            if ejection is not None and ejection.until > now:
                ejected.append((ejection.until, target))
            else:
                healthy.append(target)
        ejected.sort(key=lambda pair: pair[0])
        return healthy + [target for _, target in ejected]

    def failed(self, route: Route, target: RouteTarget) -> float:
        """Eject ``target`` after a failed attempt; returns for how many seconds."""
        key = (route.id, target.id)
        previous = self._ejected.get(key)
        failures = previous.failures + 1 if previous is not None else 1
        period = min(self._base_s * 2.0 ** (failures - 1), self._max_s)
        self._ejected[key] = _Ejection(self._clock() + period, failures)
        self._forget_old()
        return period

    def succeeded(self, route: Route, target: RouteTarget) -> None:
        if self._ejected:
            self._ejected.pop((route.id, target.id), None)

    def retain(self, live: Collection[str]) -> None:
        """Forget the turns and ejections of services that are gone."""
        for route_id in [r for r in self._turns if r not in live]:
            del self._turns[route_id]
        for key in [k for k in self._ejected if k[0] not in live]:
            del self._ejected[key]

    def is_ejected(self, route: Route, target: RouteTarget) -> bool:
        ejection = self._ejected.get((route.id, target.id))
        return ejection is not None and ejection.until > self._clock()

    def _forget_old(self) -> None:
        """Drop ejections long over, so targets that are gone do not pile up."""
        if len(self._ejected) < 1024:
            return
        horizon = self._clock() - self._max_s
        for key in [k for k, e in self._ejected.items() if e.until < horizon]:
            del self._ejected[key]
