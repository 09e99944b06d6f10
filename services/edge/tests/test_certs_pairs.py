"""load_pair takes good chains of every key type and refuses bad ones saying why; covers()."""

import ipaddress
import pickle
from datetime import UTC, datetime, timedelta

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from hypothesis import given
from hypothesis import strategies as st

from heron_edge.certs import CertificateError, covers, load_pair

NOW = datetime.now(UTC)
_Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def self_signed(
    key: _Key,
    *,
    dns: list[str] | None = None,
    ips: tuple[str, ...] = (),
    common_name: str = "cn.example.com",
    not_before: datetime = NOW - timedelta(days=1),
    not_after: datetime = NOW + timedelta(days=30),
    usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH,
) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if dns is not None:
        san: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        san += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm).public_bytes(serialization.Encoding.PEM)


def key_pem(key: _Key, password: bytes | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    # OpenSSL's traditional format where it exists: load_pair must take more than PKCS#8
    traditional = not isinstance(key, ed25519.Ed25519PrivateKey)
    form = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if traditional
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, form, encryption)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.mark.parametrize("key_type", [trustme.KeyType.RSA, trustme.KeyType.ECDSA])
def test_a_chain_from_a_ca_loads_with_its_names(ca: trustme.CA, key_type: trustme.KeyType) -> None:
    leaf = ca.issue_cert("App.Example.com", "*.example.com", "10.0.0.1", key_type=key_type)
    chain = b"".join(blob.bytes() for blob in leaf.cert_chain_pems)
    pair = load_pair(chain, leaf.private_key_pem.bytes(), source="tls.crt")
    assert pair.names == ("app.example.com", "*.example.com")  # lower case, IP SANs left out
    leaf_der = x509.load_pem_x509_certificate(chain).public_bytes(serialization.Encoding.DER)
    digest = hashes.Hash(hashes.SHA256())
    digest.update(leaf_der)
    assert pair.fingerprint == digest.finalize().hex()
    assert pair.source == "tls.crt"
    assert pair.key_pem.startswith(b"-----BEGIN PRIVATE KEY-----")  # re-encoded as PKCS#8
    assert pickle.loads(pickle.dumps(pair)) == pair


@pytest.mark.parametrize(
    "key",
    [
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
        ed25519.Ed25519PrivateKey.generate(),
    ],
    ids=["p256", "p384", "ed25519"],
)
def test_ec_and_ed25519_keys_load(key: _Key) -> None:
    pair = load_pair(self_signed(key, dns=["a.example.com"]), key_pem(key), source="x")
    assert pair.names == ("a.example.com",)
    assert pair.not_after > NOW


def test_the_common_name_counts_only_without_a_subject_alt_name() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pair = load_pair(self_signed(key, common_name="Legacy.Example.com"), key_pem(key), source="x")
    assert pair.names == ("legacy.example.com",)


def refusal(chain: bytes, key: bytes) -> str:
    with pytest.raises(CertificateError) as caught:
        load_pair(chain, key, source="/certs/tls.crt")
    assert str(caught.value).startswith("/certs/tls.crt: ")
    assert caught.value.source == "/certs/tls.crt"
    return caught.value.reason


@pytest.fixture(scope="module")
def good() -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    return key, self_signed(key, dns=["a.example.com"])


def test_refusals_say_what_is_wrong(good: tuple[ec.EllipticCurvePrivateKey, bytes]) -> None:
    key, chain = good
    other = ec.generate_private_key(ec.SECP256R1())
    assert "no PEM certificate" in refusal(b"", key_pem(key))
    assert "no PEM certificate" in refusal(key_pem(key), key_pem(key))
    assert "cannot be parsed" in refusal(
        chain[:-60] + b"\n-----END CERTIFICATE-----\n", key_pem(key)
    )
    assert "private key cannot be parsed" in refusal(chain, b"not a key")
    assert "private key cannot be parsed" in refusal(chain, chain)
    assert "encrypted" in refusal(chain, key_pem(key, password=b"secret"))
    assert "does not belong to the certificate" in refusal(chain, key_pem(other))


def test_names_validity_and_purpose_are_checked() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key_pem(key)
    ip_only = self_signed(key, dns=[], ips=("10.0.0.1",), common_name="a.example.com")
    assert "names no DNS name" in refusal(ip_only, pem)
    later = self_signed(key, dns=["a.example.com"], not_before=NOW + timedelta(days=1))
    assert "not valid before" in refusal(later, pem)
    expired = self_signed(
        key,
        dns=["a.example.com"],
        not_before=NOW - timedelta(days=9),
        not_after=NOW - timedelta(days=1),
    )
    assert "expired at" in refusal(expired, pem)
    assert load_pair(expired, pem, source="x", allow_expired=True).expired()
    client_only = self_signed(key, dns=["a.example.com"], usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    assert "does not allow TLS servers" in refusal(client_only, pem)


def test_weak_and_unusual_keys_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert "at least 2048" in refusal(self_signed(small, dns=["a.example.com"]), key_pem(small))
    k1 = ec.generate_private_key(ec.SECP256K1())
    assert "curve 'secp256k1'" in refusal(self_signed(k1, dns=["a.example.com"]), key_pem(k1))


def test_a_chain_out_of_order_is_refused(ca: trustme.CA) -> None:
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("a.example.com")
    leaf_pem, intermediate_pem = (blob.bytes() for blob in leaf.cert_chain_pems)
    key = leaf.private_key_pem.bytes()
    assert load_pair(leaf_pem + intermediate_pem, key, source="x").names == ("a.example.com",)
    assert "out of order" in refusal(leaf_pem + ca.cert_pem.bytes(), key)


LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
PARENTS = st.lists(LABEL, min_size=1, max_size=4).map(".".join)


@given(label=LABEL, parent=PARENTS, upper=st.booleans())
def test_a_wildcard_covers_exactly_one_label(label: str, parent: str, upper: bool) -> None:
    wildcard = f"*.{parent}".upper() if upper else f"*.{parent}"
    assert covers([wildcard], f"{label}.{parent}")
    assert covers([wildcard], f"{label}.{parent}.".upper())
    assert not covers([wildcard], parent)
    assert not covers([wildcard], f"{label}.{label}.{parent}")
    assert not covers([wildcard], f".{parent}")


@given(names=st.lists(PARENTS | PARENTS.map("*.{}".format), max_size=3), server=PARENTS)
def test_covers_matches_label_by_label(names: list[str], server: str) -> None:
    def model(name: str) -> bool:
        ours, theirs = name.split("."), server.split(".")
        return len(ours) == len(theirs) and all(
            a == b or (i == 0 and a == "*")
            for i, (a, b) in enumerate(zip(ours, theirs, strict=True))
        )

    assert covers(names, server) == any(model(name) for name in names)
