"""Heron management: the source of truth for accounts, users, API tokens, peers, networks and services.

Parts: ``app`` wires everything (the only module that does); ``settings``; ``errors`` (the exception
tree); ``domain/`` holds the pure rules (permissions, token format, the service spec); ``db/`` the
tables, engine, migrations and stores; ``events`` the transactional outbox that publishes domain
events on NATS; ``api/`` the thin REST layer (parse → use case → response model) and its RFC 9457
problem responses; ``bootstrap`` the default account and owner token of a fresh install.
"""
