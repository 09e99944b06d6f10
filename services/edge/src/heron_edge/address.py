"""Listener addresses as the settings spell them: ``:443``, ``0.0.0.0:443``, ``[::]:443``."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, value: str, *, default_host: str = "0.0.0.0") -> "Address":  # noqa: S104
        """``:443``, ``0.0.0.0:443``, ``[::]:443`` or ``127.0.0.1:9100``."""
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{value!r} is not an address like ':443' or '0.0.0.0:443'")
        host = host.strip("[]") or default_host
        return cls(host, int(port))

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"
