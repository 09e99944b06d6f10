"""Header rewriting between the client and the target: what goes through, what the edge sets.

Requests: hop-by-hop headers (and any header the client names in ``Connection``) stop here;
the client's ``X-Forwarded-*``, ``X-Real-IP`` and ``Forwarded`` are never trusted — the edge
sets them from the connection it accepted; the target's ``custom_headers`` override; ``Host``
is the target's own unless the service passes the client's on. The client's ``X-Heron-*``
identity headers never pass; for a protected service the session cookie and the configured
auth headers stop here too, and the edge adds the identity it verified. Responses: hop-by-hop headers
stop here and, with ``rewrite_redirects``, a ``Location``/``Content-Location`` that points at
the target is turned into the public domain (with the prefix the edge stripped put back).

Everything works on bytes, as the parser hands them over: this runs once per request.
"""

from collections.abc import Sequence

from heron_core.auth import IDENTITY_HEADERS, SESSION_COOKIE

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    }
)
#: set by the edge from the accepted connection; a client's copies are dropped
FORWARDING = frozenset(
    {
        b"x-forwarded-for",
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-forwarded-port",
        b"x-real-ip",
        b"forwarded",
    }
)
#: who the edge says the client is (``X-Heron-*``): only the edge sets them
IDENTITY = frozenset(name.encode() for name in IDENTITY_HEADERS)
_DROPPED_FROM_REQUESTS = HOP_BY_HOP | FORWARDING | IDENTITY | {b"host"}
_SESSION_NAME = SESSION_COOKIE.encode()

Header = tuple[bytes, bytes]  # (lower-case name, value)


def connection_tokens(headers: Sequence[Header]) -> frozenset[bytes]:
    """The header names listed in ``Connection`` (``close``, ``upgrade``, extension headers)."""
    tokens: set[bytes] = set()
    for name, value in headers:
        if name == b"connection":
            tokens.update(t.strip().lower() for t in value.split(b","))
    tokens.discard(b"")
    return frozenset(tokens)


def request_head(
    method: bytes,
    target: bytes,
    headers: Sequence[Header],
    *,
    host: bytes,
    client_ip: str,
    public_host: bytes,
    public_port: int,
    chunked: bool,
    upgrade: bytes | None,
    custom_headers: tuple[tuple[str, str], ...],
    drop: frozenset[bytes] = frozenset(),
    strip_session: bool = False,
    extra: Sequence[Header] = (),
) -> bytes:
    """The request as the target gets it (always HTTP/1.1). ``drop``: more header names not to
    pass on (a protected service's auth headers); ``strip_session``: remove the session cookie
    from ``Cookie``; ``extra``: headers the edge adds (the verified identity)."""
    named = connection_tokens(headers)
    custom = {name.lower().encode("latin-1") for name, _ in custom_headers}
    keep_cookie = b"cookie" in custom
    if drop:
        custom |= drop
    if strip_session:
        custom.add(b"cookie")
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", host, b"\r\n"]
    forwarded_for = client_ip.encode()
    for name, value in headers:
        if name in _DROPPED_FROM_REQUESTS or name in named or name in custom:
            if strip_session and name == b"cookie" and not keep_cookie and name not in named:
                cookies = without_cookie(value, _SESSION_NAME)
                if cookies:
                    parts += (name, b": ", cookies, b"\r\n")
            continue
        parts += (name, b": ", value, b"\r\n")
    node = f'"[{client_ip}]"'.encode() if ":" in client_ip else forwarded_for
    parts += (
        b"x-forwarded-for: ", forwarded_for,
        b"\r\nx-real-ip: ", forwarded_for,
        b"\r\nx-forwarded-proto: https\r\nx-forwarded-host: ", public_host,
        b"\r\nx-forwarded-port: ", str(public_port).encode(),
        b"\r\nforwarded: for=", node, b";host=", _quoted(public_host), b";proto=https\r\n",
    )  # fmt: skip
    for extra_name, extra_value in extra:
        parts += (extra_name, b": ", extra_value, b"\r\n")
    for custom_name, custom_value in custom_headers:
        parts += (custom_name.encode("latin-1"), b": ", custom_value.encode("latin-1"), b"\r\n")
    if chunked:
        parts.append(b"transfer-encoding: chunked\r\n")
    if upgrade is not None:
        parts += (b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def without_cookie(value: bytes, cookie: bytes) -> bytes:
    """A ``Cookie`` header value without the cookie(s) named ``cookie`` (the others kept, in
    order); ``b""`` when none is left."""
    if cookie + b"=" not in value:
        return value
    pairs = (pair.strip() for pair in value.split(b";"))
    return b"; ".join(p for p in pairs if p and p.partition(b"=")[0].strip() != cookie)


def _quoted(host: bytes) -> bytes:
    """``Forwarded`` values with ``:`` (a port) must be quoted (RFC 7239 §4)."""
    return b'"' + host + b'"' if b":" in host else host


def response_head(
    status: int,
    reason: bytes,
    headers: Sequence[Header],
    *,
    framing: bytes | None,
    connection: bytes | None,
    location_rewrite: "LocationRewrite | None",
) -> bytes:
    """The response as the client gets it. ``framing``: a ``transfer-encoding`` header line to
    add (the edge re-chunks a body it does not know the length of); ``connection``: ``close``
    or ``keep-alive`` when the edge must say so."""
    named = connection_tokens(headers)
    parts = [b"HTTP/1.1 ", str(status).encode(), b" ", reason, b"\r\n"]
    for name, value in headers:
        if name in HOP_BY_HOP or name in named:
            continue
        if location_rewrite is not None and name in (b"location", b"content-location"):
            parts += (name, b": ", location_rewrite.apply(value), b"\r\n")
        else:
            parts += (name, b": ", value, b"\r\n")
    if framing is not None:
        parts += (b"transfer-encoding: ", framing, b"\r\n")
    if connection is not None:
        parts += (b"connection: ", connection, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def informational_head(status: int, reason: bytes, headers: Sequence[Header]) -> bytes:
    """A 1xx interim response (100 Continue, 103 Early Hints), hop-by-hop headers removed."""
    parts = [b"HTTP/1.1 ", str(status).encode(), b" ", reason, b"\r\n"]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


def switching_head(reason: bytes, headers: Sequence[Header], upgrade: bytes) -> bytes:
    """The 101 answer to an upgrade: the target's headers, with the upgrade hop kept."""
    parts = [b"HTTP/1.1 101 ", reason, b"\r\n"]
    for name, value in headers:
        if name not in HOP_BY_HOP:
            parts += (name, b": ", value, b"\r\n")
    parts += (b"connection: upgrade\r\nupgrade: ", upgrade, b"\r\n\r\n")
    return b"".join(parts)


def _default_port(scheme: bytes) -> bytes:
    return b"443" if scheme == b"https" else b"80"


def _normal_authority(scheme: bytes, authority: bytes) -> bytes:
    """``host:port`` lower-cased, with the scheme's default port made explicit."""
    authority = authority.lower()
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end != -1 and authority[end + 1 : end + 2] == b":":
            return authority
        return authority + b":" + _default_port(scheme)
    if b":" in authority:
        return authority
    return authority + b":" + _default_port(scheme)


class LocationRewrite:
    """Turns an absolute URL that points at the target into one that points at the service."""

    __slots__ = ("_prefix", "_public", "_targets")

    def __init__(self, target_authorities: Sequence[str], public_authority: bytes, prefix: bytes):
        self._targets = frozenset(
            _normal_authority(scheme, authority.encode("latin-1"))
            for authority in target_authorities
            for scheme in (b"http", b"https")
        )
        self._public = b"https://" + public_authority
        self._prefix = prefix  # b"" when nothing was stripped

    def apply(self, value: bytes) -> bytes:
        scheme_end = value.find(b"://")
        if scheme_end == -1:
            return value  # relative: the client resolves it against the public URL already
        scheme = value[:scheme_end].lower()
        if scheme not in (b"http", b"https"):
            return value
        rest = value[scheme_end + 3 :]
        cut = len(rest)
        for stop in (b"/", b"?", b"#"):
            index = rest.find(stop)
            if index != -1:
                cut = min(cut, index)
        authority, path = rest[:cut], rest[cut:]
        if _normal_authority(scheme, authority) not in self._targets:
            return value
        if self._prefix and (not path or path.startswith(b"/")):
            path = self._prefix + (path if path not in (b"", b"/") else b"/")
        elif not path:
            path = b"/"
        return self._public + path
