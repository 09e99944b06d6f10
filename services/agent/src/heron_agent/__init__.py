"""Heron's peer agent: the ``heron`` CLI that logs a peer in and keeps its tunnel up.

Parts: ``cli`` (``heron up``, ``heron status``), ``runner`` (login, tunnel, forwarder and the
sync stream, with reconnects), ``forwarder`` (dials what edges ask for, if allowed), ``allowed``
(the targets management permits), ``tunnel`` (the WireGuard interface and its edges), ``state``
(the key, login and status files), ``management`` (the only module that speaks gRPC).
"""

import os

# The agent forks only to exec (wg, ip, wireguard-go): gRPC's fork handlers have nothing to do
# and log a line per fork when the sync stream's threads are busy.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
