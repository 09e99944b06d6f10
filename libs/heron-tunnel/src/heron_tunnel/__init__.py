"""The tunnel shared by the edge and the agent.

Parts: ``header`` (the forwarder's binary request/response header), ``relay`` (moving bytes
between two connected sockets, with ``os.splice`` where the kernel allows), ``datagrams`` (UDP
datagrams framed over a stream), ``wireguard`` (a WireGuard interface: wireguard-go or the kernel
module, configured with wireguard-tools), ``keys`` (X25519 key pairs in WireGuard's encoding) and
``netns`` (network namespaces and veth pairs, for tests and benchmarks).
"""
