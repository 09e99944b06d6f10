"""Password and PIN logins, and logout, on the service's own domain.

``GET /.heron/auth/login?rd=`` shows the service's methods (SSO alone: straight to it);
``POST`` checks a password or PIN — refused unseen while the address is locked
(``attempts``) — and sets the session cookie; ``/.heron/auth/logout`` clears it.
"""

import time
from typing import Annotated
from urllib.parse import urlencode

import structlog
from fastapi import APIRouter, Form
from fastapi.responses import RedirectResponse, Response

from heron_authgateway import pages
from heron_authgateway.gateway import GatewayDep
from heron_authgateway.secrets_check import is_pin, matches
from heron_authgateway.session_cookie import clear_cookie, signed_in
from heron_authgateway.visit import VisitDep
from heron_core.auth import (
    LOGIN_PATH,
    LOGOUT_PATH,
    RETURN_PARAM,
    SSO_START_PATH,
    AuthMethod,
    ServiceAuthRecord,
    safe_return_path,
)
from heron_core.sessions import new_claims, sign_session

log = structlog.get_logger(__name__)
router = APIRouter()

#: what a form sends for each method, and how its failure reads
_FORM_METHODS = {AuthMethod.PASSWORD: "Wrong password", AuthMethod.PIN: "Wrong PIN"}
_SUBJECTS = {AuthMethod.PASSWORD: "password-user", AuthMethod.PIN: "pin-user"}


@router.get(LOGIN_PATH)
async def login_page(gateway: GatewayDep, visit: VisitDep, rd: str | None = None) -> Response:
    record = gateway.record(visit.service_id)
    back = safe_return_path(rd)
    if record.methods == [AuthMethod.SSO]:
        return RedirectResponse(f"{SSO_START_PATH}?{urlencode({RETURN_PARAM: back})}", 302)
    return pages.login_page(record.domain, record.methods, back)


@router.post(LOGIN_PATH)
async def log_in(
    gateway: GatewayDep,
    visit: VisitDep,
    method: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    pin: Annotated[str, Form()] = "",
    rd: Annotated[str, Form()] = "",
) -> Response:
    record = gateway.record(visit.service_id)
    back = safe_return_path(rd)
    chosen = _method(method, pin)
    stored_hash = _hash_of(record, chosen)
    if chosen is None or stored_hash is None:
        return _again(record, back, "Choose one of the sign-in methods below.", 400)
    secret = pin if chosen is AuthMethod.PIN else password
    if chosen is AuthMethod.PIN and not is_pin(secret):
        return _again(record, back, "A PIN is 4 to 10 digits.", 400)
    backend = gateway.backend()
    verdict = await backend.attempts.admit(record.service_id, visit.client)
    if not verdict.admitted:
        log.info("login refused: locked", service_id=record.service_id, client=visit.client)
        return pages.locked_page(verdict.locked_until - time.time())
    if not await matches(secret, stored_hash):
        service_locked_until = await backend.attempts.failed(record.service_id)
        log.info("login failed", service_id=record.service_id, client=visit.client,
                 method=chosen.value)  # fmt: skip
        message = _FORM_METHODS[chosen]
        if locked_until := max(verdict.locks_until, service_locked_until):
            message += f". Too many failed attempts: try again in {pages.wait_text(locked_until - time.time())}."
        return _again(record, back, message, 401)
    await backend.attempts.succeeded(record.service_id, visit.client)
    claims = new_claims(
        subject=_SUBJECTS[chosen],
        domain=record.domain,
        service_id=record.service_id,
        version=record.session_version,
        method=chosen,
        lifetime_s=gateway.settings.session_ttl_s,
    )
    token = sign_session(claims, await backend.keys.signing_key())
    log.info("logged in", service_id=record.service_id, client=visit.client, method=chosen.value)
    return signed_in(token, gateway.settings.session_ttl_s, back)


@router.get(LOGOUT_PATH)
@router.post(LOGOUT_PATH)
async def log_out() -> Response:
    response = pages.logged_out_page()
    clear_cookie(response)
    return response


def _method(method: str, pin: str) -> AuthMethod | None:
    if not method:  # a form without the hidden field: tell by the field that came
        return AuthMethod.PIN if pin else AuthMethod.PASSWORD
    try:
        chosen = AuthMethod(method)
    except ValueError:
        return None
    return chosen if chosen in _FORM_METHODS else None


def _hash_of(record: ServiceAuthRecord, method: AuthMethod | None) -> str | None:
    if method is AuthMethod.PASSWORD:
        return record.password_hash
    if method is AuthMethod.PIN:
        return record.pin_hash
    return None


def _again(record: ServiceAuthRecord, back: str, message: str, status: int) -> Response:
    return pages.login_page(record.domain, record.methods, back, message=message, status=status)
