"""Heron management: the source of truth for accounts, users, API tokens, peers, networks, edges
and services.

Parts: ``app`` wires everything (the only module that does); ``settings``; ``errors`` (the exception
tree); ``domain/`` holds the pure rules (permissions, token format, the service spec, setup key
states, overlay addresses, service status rules); ``db/`` the tables, engine, migrations and write lock; the use cases
(``identity``, ``setup_keys``, ``peers``, ``network``, ``proxy_tokens``, ``service_catalog`` for
the REST API; ``agents`` and ``edges`` for the streams; ``service_status`` stores the edges'
reports and derives each service's status from them; ``overlay`` allocates addresses);
``events`` the transactional outbox that publishes domain events on NATS and hands them to the
``change_feed``; ``event_bus`` NATS both ways; ``api/`` the thin REST layer (parse → use case →
response model) and its RFC 9457 problem responses; ``grpc/`` the agents' and edges' streams (the
only code that sees protobuf); ``bootstrap`` the default account and owner token of a fresh install,
and the embedded edge's proxy token.
"""
