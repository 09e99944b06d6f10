"""The ``heron_session`` cookie: set after a login, cleared by a logout.

``HttpOnly; Secure; SameSite=Lax; Path=/`` and no ``Domain``: only the service's own domain
gets it (docs/auth.md, "Sessions"). Written by hand so the attributes are exactly these.
"""

from fastapi.responses import RedirectResponse, Response

from heron_core.auth import SESSION_COOKIE

_ATTRIBUTES = "Path=/; HttpOnly; Secure; SameSite=Lax"


def set_cookie(response: Response, token: str, max_age_s: int) -> None:
    response.headers.append(
        "set-cookie", f"{SESSION_COOKIE}={token}; {_ATTRIBUTES}; Max-Age={max_age_s}"
    )


def clear_cookie(response: Response) -> None:
    response.headers.append("set-cookie", f"{SESSION_COOKIE}=; {_ATTRIBUTES}; Max-Age=0")


def signed_in(token: str, max_age_s: int, return_path: str) -> Response:
    """303 to ``return_path`` (already checked by ``safe_return_path``) with the session."""
    response = RedirectResponse(return_path, status_code=303)
    set_cookie(response, token, max_age_s)
    return response
