"""The ``heron_session`` cookie: set after a login, cleared by a logout; and ``heron_sso``,
which ties a single sign-on to the browser that started it.

``HttpOnly; Secure; SameSite=Lax`` and no ``Domain``: only the service's own domain gets them
(docs/auth.md, "Sessions"); ``heron_sso`` only under ``/.heron/auth/``, so it never leaves the
gateway. Written by hand so the attributes are exactly these.
"""

import hashlib

from fastapi.responses import RedirectResponse, Response

from heron_core.auth import AUTH_PATH_PREFIX, SESSION_COOKIE

_ATTRIBUTES = "Path=/; HttpOnly; Secure; SameSite=Lax"
#: set when single sign-on starts, checked (and cleared) at the hand-off on the same domain
SSO_COOKIE = "heron_sso"
_SSO_ATTRIBUTES = f"Path={AUTH_PATH_PREFIX}; HttpOnly; Secure; SameSite=Lax"


def binding_digest(binding: str) -> str:
    """What the flow stores of the ``heron_sso`` value: never the value itself."""
    return hashlib.sha256(binding.encode()).hexdigest()


def _append(response: Response, cookie: str, attributes: str, max_age_s: int) -> None:
    """``cookie`` is ``name=value`` (an empty value with ``max_age_s`` 0 clears it)."""
    response.headers.append("set-cookie", f"{cookie}; {attributes}; Max-Age={max_age_s}")


def set_sso_cookie(response: Response, binding: str, max_age_s: int) -> None:
    _append(response, f"{SSO_COOKIE}={binding}", _SSO_ATTRIBUTES, max_age_s)


def clear_sso_cookie(response: Response) -> None:
    _append(response, f"{SSO_COOKIE}=", _SSO_ATTRIBUTES, 0)


def set_cookie(response: Response, token: str, max_age_s: int) -> None:
    _append(response, f"{SESSION_COOKIE}={token}", _ATTRIBUTES, max_age_s)


def clear_cookie(response: Response) -> None:
    _append(response, f"{SESSION_COOKIE}=", _ATTRIBUTES, 0)


def signed_in(token: str, max_age_s: int, return_path: str) -> Response:
    """303 to ``return_path`` (already checked by ``safe_return_path``) with the session."""
    response = RedirectResponse(return_path, status_code=303)
    set_cookie(response, token, max_age_s)
    return response
