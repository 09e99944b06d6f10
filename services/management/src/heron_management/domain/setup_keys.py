"""Setup keys' rules: what state a key is in, and which logins it admits."""

from datetime import datetime

from heron_core.types import SetupKeyState, SetupKeyType

MAX_SETUP_KEY_EXPIRY_S = 365 * 24 * 3600  # a year, as NetBird allows


def key_state(
    *,
    revoked: bool,
    expires_at: datetime | None,
    used_times: int,
    usage_limit: int,
    now: datetime,
) -> SetupKeyState:
    """The most decisive reason a key admits no new peer, or ``VALID``."""
    if revoked:
        return SetupKeyState.REVOKED
    if expires_at is not None and expires_at <= now:
        return SetupKeyState.EXPIRED
    if usage_limit and used_times >= usage_limit:
        return SetupKeyState.OVERUSED
    return SetupKeyState.VALID


def stored_usage_limit(key_type: SetupKeyType, usage_limit: int) -> int:
    """A one-off key is a key with a usage limit of 1."""
    return 1 if key_type is SetupKeyType.ONE_OFF else usage_limit


def admits_relogin(state: SetupKeyState, *, made_this_peer: bool) -> bool:
    """Whether a login with a key already known in the key's account may resume that peer.

    A re-login uses no count. A valid key admits it; a used-up key still admits the peers it
    made, so restarting ``heron up --setup-key KEY`` with a one-off key works. Revocation and
    expiry end both.
    """
    if state is SetupKeyState.VALID:
        return True
    return state is SetupKeyState.OVERUSED and made_this_peer


REFUSAL_REASONS = {
    SetupKeyState.REVOKED: "the setup key was revoked",
    SetupKeyState.EXPIRED: "the setup key has expired",
    SetupKeyState.OVERUSED: "the setup key has reached its usage limit",
}
