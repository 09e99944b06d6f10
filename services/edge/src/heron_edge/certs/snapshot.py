"""Every certificate the edge serves, frozen, and the one rule for picking one by name.

The control process builds a ``CertificateSnapshot`` and sends it to the workers (it pickles:
plain frozen dataclasses, dicts and bytes). Precedence, highest first:

1. a certificate handed in from outside (ACME) naming ``server_name`` exactly;
2. a file certificate (wildcard directory or the static pair) naming it exactly;
3. a wildcard name (``*.parent``) covering it: from outside first, then files;
4. a leaf the local CA issued for it;
5. the static pair, as the catch-all (NetBird's static mode: one certificate for every name).

Within one level the certificate that expires last wins, so a renewal that lands next to the
old file takes over at once.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from heron_edge.certs.pairs import CertificatePair, normalize_name

_WILDCARD_PREFIX = "*."


@dataclass(frozen=True)
class CertificateSnapshot:
    version: int = 0
    #: name -> pair, levels 1 and 2 already merged
    exact: Mapping[str, CertificatePair] = field(default_factory=dict)
    #: parent -> pair: ``example.com`` holds the certificate for ``*.example.com``
    wildcard: Mapping[str, CertificatePair] = field(default_factory=dict)
    #: name -> the local CA's leaf for it
    local: Mapping[str, CertificatePair] = field(default_factory=dict)
    catch_all: CertificatePair | None = None
    #: every pair above once, for whoever prepares them ahead (ServerContexts)
    pairs: tuple[CertificatePair, ...] = ()

    @classmethod
    def build(
        cls,
        version: int,
        *,
        external: Sequence[CertificatePair] = (),
        files: Sequence[CertificatePair] = (),
        local: Mapping[str, CertificatePair] | None = None,
        catch_all: CertificatePair | None = None,
    ) -> "CertificateSnapshot":
        exact: dict[str, CertificatePair] = {}
        wildcard: dict[str, CertificatePair] = {}
        for group in (external, files):
            group_exact, group_wildcard = _index(group)
            for name, pair in group_exact.items():
                exact.setdefault(name, pair)
            for parent, pair in group_wildcard.items():
                wildcard.setdefault(parent, pair)
        local = dict(local or {})
        every = [*exact.values(), *wildcard.values(), *local.values()]
        if catch_all is not None:
            every.append(catch_all)
        unique = {pair.fingerprint: pair for pair in every}
        return cls(version, exact, wildcard, local, catch_all, tuple(unique.values()))

    def lookup(self, server_name: str | None) -> CertificatePair | None:
        """The pair to present for ``server_name`` (None: no SNI); None when nothing fits."""
        if server_name:
            name = normalize_name(server_name)
            pair = self.exact.get(name) or self._wildcard_for(name) or self.local.get(name)
            if pair is not None:
                return pair
        return self.catch_all

    def covered(self, server_name: str) -> bool:
        """Whether a file or external certificate covers ``server_name`` (levels 1 to 3)."""
        name = normalize_name(server_name)
        return name in self.exact or self._wildcard_for(name) is not None

    def _wildcard_for(self, name: str) -> CertificatePair | None:
        label, _, parent = name.partition(".")
        return self.wildcard.get(parent) if label and parent else None


def _index(
    pairs: Sequence[CertificatePair],
) -> tuple[dict[str, CertificatePair], dict[str, CertificatePair]]:
    exact: dict[str, CertificatePair] = {}
    wildcard: dict[str, CertificatePair] = {}
    for pair in pairs:
        for name in pair.names:
            table, key = (
                (wildcard, name.removeprefix(_WILDCARD_PREFIX))
                if name.startswith(_WILDCARD_PREFIX)
                else (exact, name)
            )
            held = table.get(key)
            if held is None or pair.not_after > held.not_after:
                table[key] = pair
    return exact, wildcard
