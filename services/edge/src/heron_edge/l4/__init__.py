"""L4 services: TCP and TLS relayed by connection, UDP by client session, through the tunnel.

``listeners.L4Listeners`` keeps one listener per port the routing table names (TCP and TLS
services share the TCP port space, UDP its own) and reconciles them on every table: new ports
open, ports no service uses any more close, and the connections of a service that went away
drain for a bounded grace before they are cut. ``tcp`` routes a connection (by SNI when the
port has TLS services, otherwise straight to the port's TCP service) and relays it; ``udp``
tracks client sessions; ``balancer`` picks the target (round-robin, passive ejection).
"""
