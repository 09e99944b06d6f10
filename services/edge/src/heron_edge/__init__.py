"""Heron's edge: takes the public traffic and carries it through WireGuard to the peers.

Parts so far: ``settings``, ``management`` (the only module that speaks gRPC: registration and
the config stream), ``tunnel`` (the edge's WireGuard interface and the agents as its peers),
``connector`` (``open_stream``: a connected stream to a target through an agent), ``routes``
(the services the config stream delivered), ``app`` (wires them together).
"""

__version__ = "0.1.0"
