"""Heron's certificate manager: ACME certificates for the domains of HTTP services.

Parts, from the outside in: ``app`` wires them; ``intake`` turns events into per-domain
records (``records``, in the KV bucket ``certmanager_domains``); ``mirror`` keeps every
replica's view of the records and the ``certificates`` bucket; ``reconciler`` decides what is
due (``policy``: pure, renewal at 2/3 of the lifetime, backoff with jitter) unless
``coverage`` finds a wildcard or static file for it, takes the domain's lease (``leases``) and
runs the order (``ordering``: challenge answers from ``answers`` into ``acme_challenges``,
the chain and key from ``issued`` into ``certificates``). ``acme_client`` is the only module
that speaks the ``acme`` library, ``heron_bus.bucket`` wraps nats-py's KV, ``state``
reads and writes the buckets whole. ``health`` serves ``/healthz/*`` and ``/domains``.
"""

__version__ = "0.1.0"
