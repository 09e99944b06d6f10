"""How many single sign-ons one client address may start, per replica.

Each start writes a flow to the KV bucket ``auth_flows`` before anyone has logged in, so a
script looping on ``/.heron/auth/sso`` must not be able to fill it: at most ``limit`` starts per
address (IPv6: per /64) in each window, and at most ``max_addresses`` addresses tracked per
window (past that, new addresses wait for the next window). In memory: a replica restart or
another replica gives a few more, which the bucket's size limit bounds in the end.
"""

from heron_authgateway.attempts import address_token

#: starts per address per window: far more than a person clicking "sign in" again
DEFAULT_LIMIT = 30
DEFAULT_WINDOW_S = 60.0
DEFAULT_MAX_ADDRESSES = 100_000


class StartLimit:
    def __init__(
        self,
        limit: int = DEFAULT_LIMIT,
        window_s: float = DEFAULT_WINDOW_S,
        max_addresses: int = DEFAULT_MAX_ADDRESSES,
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._window = -1
        self._counts: dict[str, int] = {}

    def allow(self, address: str, now: float) -> bool:
        """Count a start from ``address`` at ``now`` (epoch or monotonic seconds); False when
        it is over the limit (and then it is not counted)."""
        window = int(now // self.window_s)
        if window != self._window:
            self._window = window
            self._counts.clear()
        key = address_token(address)
        count = self._counts.get(key, 0)
        if count >= self.limit or (count == 0 and len(self._counts) >= self.max_addresses):
            return False
        self._counts[key] = count + 1
        return True
