"""Heron's auth gateway: login pages, password/PIN checks, OIDC single sign-on and session
cookies for HTTP services (README.md, docs/auth.md).

Parts: ``app`` (wiring, error pages, security headers), ``gateway`` (the shared state and its
NATS side), ``registry`` (``auth_services``), ``keys`` (``auth_keys``), ``attempts``
(``auth_attempts``), ``flows`` (``auth_flows``), ``login`` and ``sso`` (the routes), ``oidc``
(the OpenID Connect client), ``pages`` (HTML), ``session_cookie``, ``secrets_check``,
``visit`` (what the edge's headers say), ``health``, ``settings``.
"""
