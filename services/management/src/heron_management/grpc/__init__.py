"""Management's gRPC side: the streams of agents (``AgentService``) and edges (``ProxyService``).

Parts: ``server`` (the grpc.aio server, started and stopped by the app's lifespan), ``agent_service``
and ``proxy_service`` (the servicers: one ``_Stream`` object per open stream), ``streams`` (the
inbox every stream waits on: messages, changes, heartbeats, a stop), ``call_context`` (bearer
tokens and the mapping of management's errors to status codes) and ``convert`` (the only module
that builds or reads protobuf messages). Only this package imports ``heron_proto``.
"""
