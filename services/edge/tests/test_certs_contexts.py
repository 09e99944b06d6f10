"""ServerContexts: the SNI picks the certificate, an unknown name gets the fallback, and a new
snapshot keeps the contexts of the certificates it did not change. Real handshakes, in memory."""

import hashlib
import pickle
import ssl

import pytest
import trustme
from cryptography import x509

from heron_edge.certs import CertificatePair, CertificateSnapshot, ServerContexts, load_pair


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def issue(
    ca: trustme.CA, *names: str, key_type: trustme.KeyType = trustme.KeyType.ECDSA
) -> CertificatePair:
    leaf = ca.issue_cert(*names, key_type=key_type)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    return load_pair(chain, leaf.private_key_pem.bytes(), source=f"trustme:{names[0]}")


def handshake(
    server: ssl.SSLContext, client: ssl.SSLContext, server_name: str | None
) -> ssl.SSLObject:
    """A full TLS handshake through memory BIOs; returns the client's end."""
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client_end = client.wrap_bio(to_client, to_server, server_hostname=server_name)
    server_end = server.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for side, end in (("client", client_end), ("server", server_end)):
            if not done[side]:
                try:
                    end.do_handshake()
                    done[side] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return client_end
    raise AssertionError("the handshake did not finish")


def presented(client_end: ssl.SSLObject) -> str:
    der = client_end.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def trusting(ca: trustme.CA, alpn: list[str] | None = None) -> ssl.SSLContext:
    client = ssl.create_default_context()
    ca.configure_trust(client)
    client.set_alpn_protocols(alpn or ["http/1.1"])
    return client


def unverified() -> ssl.SSLContext:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    return client


def test_the_sni_picks_the_certificate(ca: trustme.CA) -> None:
    a = issue(ca, "a.example.com")
    star = issue(ca, "*.example.com", key_type=trustme.KeyType.RSA)
    snapshot = CertificateSnapshot.build(1, files=[a, star])
    contexts = ServerContexts(pickle.loads(pickle.dumps(snapshot)))  # as a worker receives it
    for name, pair in (("a.example.com", a), ("B.example.com", star)):
        context = contexts.context_for(name)
        assert not contexts.is_fallback(context)
        client_end = handshake(context, trusting(ca), name)  # verifies chain and hostname
        assert presented(client_end) == pair.fingerprint
        assert client_end.selected_alpn_protocol() == "http/1.1"
        assert client_end.version() == "TLSv1.3"


def test_an_unknown_name_gets_the_fallback_and_the_handshake_completes(ca: trustme.CA) -> None:
    contexts = ServerContexts(CertificateSnapshot.build(1, files=[issue(ca, "a.example.com")]))
    for name in ("unknown.org", None):
        context = contexts.context_for(name)
        assert contexts.is_fallback(context)
        der = handshake(context, unverified(), name).getpeercert(binary_form=True)
        assert der is not None
        subject = x509.load_der_x509_certificate(der).subject
        assert subject.rfc4514_string() == "CN=heron-edge fallback"
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(contexts.context_for("unknown.org"), trusting(ca), "unknown.org")


def test_no_sni_gets_the_catch_all(ca: trustme.CA) -> None:
    static = issue(ca, "static.example.com")
    contexts = ServerContexts(CertificateSnapshot.build(1, files=[static], catch_all=static))
    context = contexts.context_for(None)
    assert not contexts.is_fallback(context)
    assert presented(handshake(context, unverified(), None)) == static.fingerprint


def test_a_new_snapshot_keeps_the_contexts_it_did_not_change(ca: trustme.CA) -> None:
    a, b = issue(ca, "a.example.com"), issue(ca, "b.example.com")
    contexts = ServerContexts(CertificateSnapshot.build(1, files=[a]))
    first = contexts.context_for("a.example.com")
    contexts.update(CertificateSnapshot.build(2, files=[a, b]))
    assert contexts.context_for("a.example.com") is first
    assert (
        presented(handshake(contexts.context_for("b.example.com"), trusting(ca), "b.example.com"))
        == b.fingerprint
    )

    contexts.update(CertificateSnapshot.build(3, files=[b]))
    assert contexts.is_fallback(contexts.context_for("a.example.com"))
    contexts.update(CertificateSnapshot.build(4, files=[a, b]))
    assert contexts.context_for("a.example.com") is not first  # dropped when it went away


def test_alpn_and_protocol_settings(ca: trustme.CA) -> None:
    a = issue(ca, "a.example.com")
    contexts = ServerContexts(CertificateSnapshot.build(1, files=[a]), alpn=["h2", "http/1.1"])
    context = contexts.context_for("a.example.com")
    client_end = handshake(context, trusting(ca, ["h2", "http/1.1"]), "a.example.com")
    assert client_end.selected_alpn_protocol() == "h2"
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION

    old_client = trusting(ca)
    old_client.maximum_version = ssl.TLSVersion.TLSv1_2
    assert handshake(context, old_client, "a.example.com").version() == "TLSv1.2"
