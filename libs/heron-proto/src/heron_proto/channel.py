"""The one way Heron's clients (agents, edges) open a gRPC channel to management.

Hand-written, unlike the rest of this package: a management URL (``https://host:port`` for TLS,
``http://`` or a bare ``host:port`` without) becomes a ``grpc.aio`` channel with keepalives that
hold a long-lived stream open through NATs and notice a dead peer within about a minute.
"""

from urllib.parse import urlsplit

import grpc
from grpc import aio

DEFAULT_PORT = 50051
_KEEPALIVE = (
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
)


def grpc_target(url: str) -> tuple[str, bool]:
    """``host:port`` and whether to use TLS, from ``https://h:p``, ``http://h:p`` or ``h:p``."""
    parsed = urlsplit(url if "://" in url else f"http://{url}")
    if parsed.scheme not in {"http", "https", "grpc", "grpcs"}:
        raise ValueError(f"management URL {url!r}: use https://host:port (or http:// locally)")
    if not parsed.hostname:
        raise ValueError(f"management URL {url!r} names no host")
    try:
        port = parsed.port or DEFAULT_PORT
    except ValueError as exc:
        raise ValueError(f"management URL {url!r}: {exc}") from exc
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{port}", parsed.scheme in {"https", "grpcs"}


def open_channel(url: str, *, max_receive_bytes: int | None = None) -> aio.Channel:
    """A channel to management at ``url``; ``ValueError`` for a URL that names no server."""
    target, secure = grpc_target(url)
    options: list[tuple[str, int]] = list(_KEEPALIVE)
    if max_receive_bytes is not None:
        options.append(("grpc.max_receive_message_length", max_receive_bytes))
    if secure:
        return aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
    return aio.insecure_channel(target, options=options)
