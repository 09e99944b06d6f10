"""Heron's edge: takes the public traffic and carries it through WireGuard to the peers.

The control process (``__main__``): ``settings``, ``management`` (the only module that speaks
gRPC: registration, the config stream, status reports), ``tunnel`` (the WireGuard interface and
the agents as its peers), ``certs`` (certificates by SNI), ``bucket_sync`` (the only module
that speaks NATS: the certmanager's certificates and ACME challenge answers), ``challenges``
(those answers), ``status`` (what it reports per service), ``health``, ``workers`` (the
data-plane processes). The data plane (``worker``): ``dataplane`` (listeners, the SNI router
of ``tls``, port 80), ``http`` (the L7 proxy), ``connector`` (``open_stream``: a connected
stream to a target through an agent), ``routes`` (the routing table).
"""

import os

# The edge forks only to exec (wg, ip, its workers): gRPC's fork handlers have nothing to do
# and log a line per fork when the config stream's threads are busy.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"
