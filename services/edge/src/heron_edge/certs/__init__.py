"""Certificates at the edge: where they come from, which one a name gets, and the TLS contexts.

Parts: ``pairs`` (``CertificatePair``, ``load_pair``, the ``covers`` rule), ``sources`` (files
the edge polls and hot-reloads through ``watched``, and the ``ExternalSource`` seam ACME
feeds), ``stored`` (the certmanager's ``StoredCertificate`` as a pair), ``local_ca`` (a CA of the edge's own, for HTTPS with no setup), ``issuing`` (minting
leaves and self-signed pairs), ``snapshot`` (the frozen, picklable set the workers get, and the
precedence rule), ``store`` (the control process's ``CertificateStore``), ``contexts`` (the
workers' ``ServerContexts``).

The control process owns a ``CertificateStore`` and pushes each snapshot from ``changes()`` to
the workers; a worker feeds it to ``ServerContexts.update`` and asks ``context_for(sni)``.
"""

from heron_edge.certs.contexts import ServerContexts, server_context
from heron_edge.certs.issuing import self_signed_pair
from heron_edge.certs.local_ca import LocalCA, LocalCAError
from heron_edge.certs.pairs import CertificateError, CertificatePair, covers, load_pair
from heron_edge.certs.snapshot import CertificateSnapshot
from heron_edge.certs.sources import ExternalSource, StaticFileSource, WildcardDirectorySource
from heron_edge.certs.store import CertificateStore

__all__ = [
    "CertificateError",
    "CertificatePair",
    "CertificateSnapshot",
    "CertificateStore",
    "ExternalSource",
    "LocalCA",
    "LocalCAError",
    "ServerContexts",
    "StaticFileSource",
    "WildcardDirectorySource",
    "covers",
    "load_pair",
    "self_signed_pair",
    "server_context",
]
