"""The edge's own answers: small HTML pages that say what went wrong and whose side it is on.

A user who hits a wrong address, a stopped backend or a slow one gets a page naming the cause
(the domain, the timeout, the agent's answer), not a bare status code; a script gets the same
status and a ``content-type`` it can ignore. Every page is a complete HTTP/1.1 response.
"""

from html import escape
from http import HTTPStatus

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;"
    "color:#222}h1{font-size:1.4rem}p{line-height:1.5}small{color:#666}"
)


def reason_phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def page(
    status: int,
    title: str,
    detail: str,
    *,
    keep_alive: bool = True,
    head_only: bool = False,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A full response: status line, headers and (unless ``head_only``) the HTML body."""
    body = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{status} {escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h1>{escape(title)}</h1><p>{escape(detail)}</p>"
        f"<p><small>{status} {escape(reason_phrase(status))} · Heron edge</small></p>"
        "</body></html>\n"
    ).encode()
    headers = (("cache-control", "no-store"), ("x-content-type-options", "nosniff"), *extra_headers)
    return _response(
        status,
        "text/html; charset=utf-8",
        body,
        headers,
        keep_alive=keep_alive,
        head_only=head_only,
    )


def redirect(location: str, *, status: int = 308, keep_alive: bool = True) -> bytes:
    """A redirect with a one-line body for clients that do not follow it."""
    return text(
        status,
        f"Moved to {location}\n",
        keep_alive=keep_alive,
        extra_headers=(("location", location),),
    )


def text(
    status: int,
    body: str,
    *,
    keep_alive: bool = True,
    head_only: bool = False,
    extra_headers: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """A full response with a plain-text body (unless ``head_only``)."""
    return _response(
        status,
        "text/plain; charset=utf-8",
        body.encode(),
        extra_headers,
        keep_alive=keep_alive,
        head_only=head_only,
    )


def _response(
    status: int,
    content_type: str,
    body: bytes,
    headers: tuple[tuple[str, str], ...],
    *,
    keep_alive: bool,
    head_only: bool,
) -> bytes:
    lines = [
        f"HTTP/1.1 {status} {reason_phrase(status)}",
        f"content-type: {content_type}",
        f"content-length: {len(body)}",
        *(f"{name}: {value}" for name, value in headers),
    ]
    if not keep_alive:
        lines.append("connection: close")
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + body
