"""Heron's shared kernel: what every service agrees on.

Parts: ``types`` (ID ``NewType``s and ``StrEnum``s), ``ids`` (ID generation), ``duration`` (Go-style
duration strings), ``service`` (the service model of the REST API), ``events`` (event schemas published
on NATS), ``settings`` (the settings base), ``logging`` (one logging setup), ``tasks`` (named background
tasks), ``secret_tokens`` (the format of Heron's tokens and keys) and ``errors`` (the root of every
exception tree).

Nothing here does I/O: services import it, it imports no service.
"""
