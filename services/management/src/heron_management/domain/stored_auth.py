"""How a service's authentication is stored: flags, groups and slow hashes, never a secret."""

from pydantic import BaseModel, Field

from heron_core.auth import session_version
from heron_core.service import AuthConfig, HeaderAuth, MethodState, SsoAuth


class StoredSecretMethod(BaseModel):
    enabled: bool = False
    hash: str | None = None  # argon2id PHC string


class StoredHeaderAuth(BaseModel):
    enabled: bool
    header: str
    hash: str


class StoredAuth(BaseModel):
    password: StoredSecretMethod = Field(default_factory=StoredSecretMethod)
    pin: StoredSecretMethod = Field(default_factory=StoredSecretMethod)
    sso: SsoAuth = Field(default_factory=SsoAuth)
    header_auths: list[StoredHeaderAuth] = Field(default_factory=list)

    def header_hash(self, header: str) -> str | None:
        wanted = header.lower()
        return next((h.hash for h in self.header_auths if h.header.lower() == wanted), None)

    @property
    def browser_login(self) -> bool:
        """Whether a browser can log in: a password, a PIN or SSO is on."""
        return (
            (self.password.enabled and self.password.hash is not None)
            or (self.pin.enabled and self.pin.hash is not None)
            or self.sso.enabled
        )

    @property
    def any_enabled(self) -> bool:
        return self.browser_login or any(h.enabled for h in self.header_auths)

    def session_version(self, service_id: str, revision: int) -> str:
        """Changes with any auth setting or secret (``revision`` is bumped on every change, so
        a setting changed and changed back does not revive old sessions): sessions issued
        under another version are refused."""
        return session_version((service_id, revision, self.model_dump(mode="json")))

    def public(self) -> AuthConfig:
        return AuthConfig(
            password_auth=MethodState(enabled=self.password.enabled),
            pin_auth=MethodState(enabled=self.pin.enabled),
            sso_auth=self.sso,
            header_auths=[
                HeaderAuth(enabled=h.enabled, header=h.header) for h in self.header_auths
            ],
        )
