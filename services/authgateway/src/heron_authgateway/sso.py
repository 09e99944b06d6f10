"""Single sign-on: OpenID Connect at the cluster's provider (``oidc.OidcClient``).

1. ``GET /.heron/auth/sso?rd=`` on the service's domain: a new flow (``state``, ``nonce``,
   PKCE verifier, where to come back) goes to ``auth_flows``; 302 to the provider.
2. ``GET /.heron/auth/callback?code&state`` on the auth domain (the cluster's one redirect
   URI): the flow is taken once, the code exchanged and the ID token checked, the groups
   compared with the service's; a one-time hand-off code (60 s) goes to ``auth_flows``; 302
   back to the service's domain.
3. ``GET /.heron/auth/session?code=`` on the service's domain: the code is taken once and,
   if the browser holds the ``heron_sso`` cookie set at step 1 (the login is this browser's,
   not one an attacker finished as themselves and sent as a link), the session cookie is set;
   303 to the original path and query.

Any replica can serve any step: all state is in NATS.
"""

import hmac
import secrets
import time
from typing import Annotated, cast
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Cookie, Depends, Request
from fastapi.responses import RedirectResponse, Response

from heron_authgateway import pages
from heron_authgateway.flows import Handoff, SsoFlow
from heron_authgateway.gateway import GatewayDep
from heron_authgateway.oidc import Identity, OidcClient, OidcError, new_pkce
from heron_authgateway.session_cookie import (
    SSO_COOKIE,
    binding_digest,
    clear_sso_cookie,
    set_sso_cookie,
    signed_in,
)
from heron_authgateway.visit import VisitDep
from heron_bus.kv import AUTH_FLOWS_TTL_S
from heron_core.auth import (
    SESSION_HANDOFF_PATH,
    SSO_CALLBACK_PATH,
    SSO_START_PATH,
    AuthMethod,
    ServiceAuthRecord,
    safe_return_path,
)
from heron_core.sessions import new_claims, sign_session

log = structlog.get_logger(__name__)
router = APIRouter()

#: the provider's ``error`` values that mean "this user may not", not "something broke"
_DENIALS = frozenset({"access_denied", "unauthorized_client", "consent_required", "login_required"})
#: how much of the provider's ``error_description`` a page shows
MAX_DESCRIPTION_CHARS = 300


def oidc_of(request: Request) -> OidcClient | None:
    return cast("OidcClient | None", request.app.state.oidc)


OidcDep = Annotated[OidcClient | None, Depends(oidc_of)]


@router.get(SSO_START_PATH)
async def start(
    gateway: GatewayDep, visit: VisitDep, oidc: OidcDep, rd: str | None = None
) -> Response:
    record = gateway.record(visit.service_id)
    if not record.sso_enabled:
        return pages.not_found_page()
    if oidc is None or not gateway.settings.authgateway_callback_url:
        return _unconfigured()
    if not visit.host or visit.hostname != record.domain.lower():
        return pages.message_page(
            "Bad request", "This address does not belong to the service.", status=400
        )
    if not gateway.sso_starts.allow(visit.client, time.monotonic()):
        log.warning("single sign-on start refused: too many", client=visit.client)
        return pages.message_page(
            "Too many sign-ins",
            "Too many sign-ins were started from your address. Please wait a minute.",
            status=429,
        )
    pkce = new_pkce()
    nonce = secrets.token_urlsafe(32)
    binding = secrets.token_urlsafe(32)
    flow = SsoFlow(
        service_id=record.service_id,
        domain=record.domain,
        origin=visit.origin,
        rd=safe_return_path(rd),
        nonce=nonce,
        code_verifier=pkce.verifier,
        binding=binding_digest(binding),
    )
    state = await gateway.backend().flows.put(flow)
    try:
        url = await oidc.authorization_url(
            redirect_uri=gateway.settings.authgateway_callback_url,
            state=state,
            nonce=nonce,
            code_challenge=pkce.challenge,
        )
    except OidcError as exc:
        log.warning("identity provider unreachable", reason=exc.reason)
        return _provider_failed()
    response = RedirectResponse(url, status_code=302)
    set_sso_cookie(response, binding, int(AUTH_FLOWS_TTL_S))
    return response


@router.get(SSO_CALLBACK_PATH)
async def callback(
    gateway: GatewayDep,
    oidc: OidcDep,
    code: str = "",
    state: str = "",
    error: str = "",
    error_description: str = "",
) -> Response:
    if oidc is None or not gateway.settings.authgateway_callback_url:
        return _unconfigured()
    flows = gateway.backend().flows
    if error:
        if state:
            await flows.take_flow(state)  # it is over either way
        return _provider_said(error, error_description)
    flow = await flows.take_flow(state)
    if flow is None or not code:
        return _expired()
    try:
        identity = await oidc.finish(
            code=code,
            redirect_uri=gateway.settings.authgateway_callback_url,
            code_verifier=flow.code_verifier,
            nonce=flow.nonce,
        )
    except OidcError as exc:
        log.warning("single sign-on failed", service_id=flow.service_id, reason=exc.reason)
        return _provider_failed()
    record = gateway.record(flow.service_id)
    if refusal := _refusal(record, identity):
        return refusal
    claims = new_claims(
        subject=identity.subject,
        domain=record.domain,
        service_id=record.service_id,
        version=record.session_version,
        method=AuthMethod.SSO,
        lifetime_s=gateway.settings.session_ttl_s,
        email=identity.email,
        name=identity.name,
        groups=identity.groups,
    )
    handoff_code = await flows.put(Handoff(claims=claims, rd=flow.rd, binding=flow.binding))
    query = urlencode({"code": handoff_code})
    return RedirectResponse(f"{flow.origin}{SESSION_HANDOFF_PATH}?{query}", status_code=302)


@router.get(SESSION_HANDOFF_PATH)
async def handoff(
    gateway: GatewayDep,
    visit: VisitDep,
    code: str = "",
    sso_cookie: Annotated[str, Cookie(alias=SSO_COOKIE)] = "",
) -> Response:
    backend = gateway.backend()
    taken = await backend.flows.take_handoff(code)
    if taken is None or taken.claims.svc != visit.service_id:
        response = _expired()
    elif not sso_cookie or not hmac.compare_digest(binding_digest(sso_cookie), taken.binding):
        log.warning(
            "single sign-on refused: the hand-off came to another browser",
            service_id=taken.claims.svc, client=visit.client,
        )  # fmt: skip
        response = pages.message_page(
            "Sign-in not completed",
            "This sign-in was not started in this browser. Please sign in again from here.",
            status=400,
        )
    else:
        ttl_s, now = gateway.settings.session_ttl_s, int(time.time())
        # the session starts now, with the key signing now: never outliving that key's record
        claims = taken.claims.model_copy(update={"iat": now, "nbf": now, "exp": now + ttl_s})
        token = sign_session(claims, await backend.keys.signing_key())
        log.info("logged in", service_id=claims.svc, client=visit.client, method="sso")
        response = signed_in(token, ttl_s, taken.rd)
    clear_sso_cookie(response)
    return response


def _refusal(record: ServiceAuthRecord, identity: Identity) -> Response | None:
    """A page refusing ``identity`` access to the service; None: it may in."""
    if not record.sso_enabled:
        return pages.not_found_page()
    if record.sso_groups and not set(record.sso_groups) & set(identity.groups):
        log.info("single sign-on refused: groups", service_id=record.service_id,
                 subject=identity.subject)  # fmt: skip
        return pages.message_page(
            "Access denied",
            f"{identity.email or identity.subject} is signed in, but {record.domain} is open "
            f"only to members of: {', '.join(record.sso_groups)}.",
            status=403,
        )
    return None


def _provider_said(error: str, description: str) -> Response:
    denied = error in _DENIALS
    said = (description or error)[:MAX_DESCRIPTION_CHARS]
    return pages.message_page(
        "Sign-in refused" if denied else "Sign-in failed",
        f"The identity provider said: {said}",
        status=403 if denied else 400,
    )


def _expired() -> Response:
    return pages.message_page(
        "Sign-in expired",
        "This sign-in link has expired or was already used. Please sign in again.",
        status=400,
    )


def _unconfigured() -> Response:
    return pages.message_page(
        "Single sign-on unavailable",
        "Single sign-on is not configured on this cluster.",
        status=503,
    )


def _provider_failed() -> Response:
    return pages.message_page(
        "Sign-in failed",
        "The identity provider could not confirm the sign-in. Please try again.",
        status=502,
    )
