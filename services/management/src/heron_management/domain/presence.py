"""When a peer or an edge counts as connected: its stream is open and was seen lately.

A stream refreshes ``last_seen`` every ``HEARTBEAT_S``; a replica that dies leaves ``connected``
set, so a row not seen for ``LIVE_WITHIN`` no longer counts.
"""

from datetime import datetime, timedelta

HEARTBEAT_S = 30.0
LIVE_WITHIN = timedelta(seconds=3 * HEARTBEAT_S)


def is_live(connected: bool, last_seen: datetime | None, now: datetime) -> bool:
    return connected and last_seen is not None and now - last_seen <= LIVE_WITHIN
