"""The HTML the gateway serves: server-rendered, no JavaScript, no external assets.

Everything that comes from outside (domains, return paths, messages, the provider's words) goes
through ``html.escape``. Every response carries ``SECURITY_HEADERS``: not cached, not framed,
no referrer (the return path may be private), styles only from this page's own hash.
"""

import base64
import hashlib
import math
from html import escape
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse

from heron_core.auth import LOGIN_PATH, RETURN_PARAM, SSO_START_PATH, AuthMethod

_CSS = """
:root{color-scheme:light dark;font-family:system-ui,sans-serif;line-height:1.5}
body{margin:0;display:grid;place-items:center;min-height:100vh;background:Canvas;color:CanvasText}
main{width:min(24rem,92vw);padding:2rem 1.5rem}
h1{font-size:1.4rem;margin:0 0 1rem}
form,.sso{display:grid;gap:.5rem;margin:1rem 0}
label{font-weight:600}
input{font:inherit;padding:.55rem;border:1px solid GrayText;border-radius:.4rem}
button,.sso a{font:inherit;padding:.6rem;border:0;border-radius:.4rem;background:#1d4ed8;
color:#fff;text-align:center;text-decoration:none;cursor:pointer}
:focus-visible{outline:3px solid #f59e0b;outline-offset:2px}
.msg{padding:.6rem;border-radius:.4rem;background:#fee2e2;color:#7f1d1d}
.or{text-align:center;color:GrayText;margin:0}
""".strip()
_CSS_HASH = base64.b64encode(hashlib.sha256(_CSS.encode()).digest()).decode()

SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        f"default-src 'none'; style-src 'sha256-{_CSS_HASH}'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
}


def page(
    title: str, body: str, *, status: int = 200, headers: dict[str, str] | None = None
) -> HTMLResponse:
    """A whole page; ``title`` is escaped here, ``body`` must already be safe HTML."""
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>"
        f"<body><main>{body}</main></body></html>"
    )
    return HTMLResponse(
        document, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})}
    )


def login_page(
    domain: str,
    methods: list[AuthMethod],
    rd: str,
    *,
    message: str | None = None,
    status: int = 200,
) -> HTMLResponse:
    parts = [f"<h1>Sign in to {escape(domain)}</h1>"]
    if message:
        parts.append(f'<p class="msg" role="alert">{escape(message)}</p>')
    forms = [_method_form(method, rd) for method in methods]
    parts.append('<p class="or">or</p>'.join(forms))
    return page(f"Sign in to {domain}", "".join(parts), status=status)


def _method_form(method: AuthMethod, rd: str) -> str:
    hidden_rd = f'<input type="hidden" name="{RETURN_PARAM}" value="{escape(rd)}">'
    if method is AuthMethod.SSO:
        href = f"{SSO_START_PATH}?{urlencode({RETURN_PARAM: rd})}"
        return f'<div class="sso"><a href="{escape(href)}">Sign in with single sign-on</a></div>'
    if method is AuthMethod.PASSWORD:
        field = (
            '<label for="password">Password</label>'
            '<input id="password" name="password" type="password" required '
            'autocomplete="current-password" maxlength="1024">'
        )
    else:
        field = (
            '<label for="pin">PIN (4 to 10 digits)</label>'
            '<input id="pin" name="pin" type="password" required inputmode="numeric" '
            'pattern="[0-9]{4,10}" minlength="4" maxlength="10" autocomplete="off">'
        )
    return (
        f'<form method="post" action="{LOGIN_PATH}">'
        f'<input type="hidden" name="method" value="{method.value}">{hidden_rd}{field}'
        f'<button type="submit">Sign in with {"password" if method is AuthMethod.PASSWORD else "PIN"}</button>'
        "</form>"
    )


def wait_text(seconds: float) -> str:
    """``45 seconds``, ``3 minutes``: how long a lockout still lasts, rounded up."""
    whole = max(1, math.ceil(seconds))
    return f"{whole} seconds" if whole < 120 else f"{math.ceil(whole / 60)} minutes"


def locked_page(retry_after_s: float) -> HTMLResponse:
    seconds = max(1, math.ceil(retry_after_s))
    body = (
        "<h1>Too many failed attempts</h1>"
        '<p class="msg" role="alert">Sign-in is locked for now. '
        f"Try again in {wait_text(seconds)}.</p>"
    )
    return page("Too many attempts", body, status=429, headers={"Retry-After": str(seconds)})


def logged_out_page() -> HTMLResponse:
    body = (
        "<h1>You are signed out</h1>"
        f'<p><a href="{LOGIN_PATH}?{RETURN_PARAM}=%2F">Sign in again</a></p>'
    )
    return page("Signed out", body)


def message_page(title: str, text: str, *, status: int) -> HTMLResponse:
    """A page that only says something: ``text`` is escaped here."""
    return page(title, f'<h1>{escape(title)}</h1><p role="alert">{escape(text)}</p>', status=status)


def not_found_page() -> HTMLResponse:
    return message_page("Not found", "There is no sign-in page for this address.", status=404)


def unavailable_page() -> HTMLResponse:
    return message_page(
        "Authentication service unavailable",
        "Sign-in is not possible right now. Please try again in a moment.",
        status=503,
    )
