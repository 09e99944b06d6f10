"""Python code generated from Heron's gRPC definitions (``proto/heron/v1``).

The generated modules live in ``heron_proto.heron.v1`` (``proxy_pb2``, ``proxy_pb2_grpc`` and
their ``.pyi`` stubs); ``libs/heron-proto/generate.py`` writes them, nobody edits them by hand.

Only each service's ``sync``/``grpc`` module may import this package: protobuf and gRPC types
stay at the edge of a service and are turned into ``heron_core`` types there. This module
re-exports nothing, so importing ``heron_proto`` alone loads neither protobuf nor gRPC.
"""
