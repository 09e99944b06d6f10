"""Certificate files that cover domains, and the challenge answers the edges serve."""

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import trustme
from cryptography import x509

from heron_certmanager.acme_client import Challenge
from heron_certmanager.answers import ACME_IDENTIFIER_OID, answer_key, challenge_answer
from heron_certmanager.coverage import CoveringFiles
from heron_certmanager.issued import csr_for, new_certificate_key
from heron_core.certificates import ChallengeType

NOW = datetime.now(UTC)


def test_a_wildcard_file_covers_one_label_below_it(tmp_path: Path) -> None:
    trustme.CA().issue_cert("*.example.com").cert_chain_pems[0].write_to_path(
        str(tmp_path / "example.crt")
    )
    files = CoveringFiles(directories=[tmp_path])

    assert files.covers("app.example.com", NOW)
    assert files.covers("APP.Example.com.", NOW)
    assert not files.covers("example.com", NOW)
    assert not files.covers("a.b.example.com", NOW)


def test_a_static_file_covers_the_names_it_has(tmp_path: Path) -> None:
    static = tmp_path / "tls.crt"
    trustme.CA().issue_cert("static.example.com").cert_chain_pems[0].write_to_path(str(static))
    files = CoveringFiles(paths=[static, tmp_path / "missing.crt"])

    assert files.covers("static.example.com", NOW)
    assert not files.covers("other.example.com", NOW)


def test_an_expired_file_covers_nothing_and_a_replaced_one_is_read_again(tmp_path: Path) -> None:
    path = tmp_path / "site.crt"
    ca = trustme.CA()
    ca.issue_cert("site.example.com", not_after=NOW - timedelta(days=1)).cert_chain_pems[
        0
    ].write_to_path(str(path))
    files = CoveringFiles(directories=[tmp_path])
    assert not files.covers("site.example.com", NOW)

    path.write_bytes(ca.issue_cert("site.example.com").cert_chain_pems[0].bytes() + b"\n")

    assert files.covers("site.example.com", NOW)


def test_an_unreadable_file_is_skipped(tmp_path: Path) -> None:
    (tmp_path / "junk.crt").write_text("not a certificate")

    assert not CoveringFiles(directories=[tmp_path]).covers("x.example.com", NOW)


def test_a_tls_alpn_answer_carries_the_digest_of_the_key_authorization() -> None:
    challenge = Challenge("tls-alpn-01", "https://ca/chall/1", "pending", "tok", "tok.thumb")

    answer = challenge_answer(challenge, "app.example.com")

    assert answer.type is ChallengeType.TLS_ALPN_01
    assert answer.cert_pem is not None and answer.key_pem is not None
    cert = x509.load_pem_x509_certificate(answer.cert_pem.encode())
    extension = cert.extensions.get_extension_for_oid(ACME_IDENTIFIER_OID)
    assert extension.critical
    assert isinstance(extension.value, x509.UnrecognizedExtension)
    assert extension.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["app.example.com"]
    assert answer_key(ChallengeType.TLS_ALPN_01, "app.example.com", "tok") == (
        "tls-alpn-01.app.example.com"
    )


def test_an_http_answer_is_the_key_authorization_under_its_token() -> None:
    challenge = Challenge("http-01", "https://ca/chall/2", "pending", "tok", "tok.thumb")

    answer = challenge_answer(challenge, "app.example.com")

    assert (answer.type, answer.key_authorization, answer.cert_pem) == (
        ChallengeType.HTTP_01, "tok.thumb", None,
    )  # fmt: skip
    assert answer_key(ChallengeType.HTTP_01, "app.example.com", "tok") == "http-01.tok"


def test_each_order_gets_a_new_key_and_a_csr_naming_only_its_domain() -> None:
    key = new_certificate_key()

    csr = x509.load_pem_x509_csr(csr_for("app.example.com", key))

    assert key != new_certificate_key()
    names = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["app.example.com"]
