"""Certificate primitives for workload mTLS: keys, CSRs, SPIFFE leaves, chain checks.

Pure functions over `cryptography` objects; no I/O. The CA (`istiod_lite.ca`) signs with
`sign_workload_certificate` after it has decided a request is allowed; ztunnel's certificate
manager uses `new_private_key` and `build_csr`; TLS verification callbacks use
`spiffe_ids_of`. Keys are ECDSA P-256 and CSRs carry exactly one URI SAN and an empty
subject, as ztunnel's do.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import secrets

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshcore.errors import MeshCoreError
from meshcore.identity import InvalidIdentityError, SpiffeId

PrivateKey = ec.EllipticCurvePrivateKey
# Valid from a little before "now", so peers with slightly skewed clocks accept them.
CLOCK_SKEW = dt.timedelta(minutes=5)


class PkiError(MeshCoreError):
    """A certificate or CSR is malformed or does not say what it must."""


def new_private_key() -> PrivateKey:
    """A fresh ECDSA P-256 key."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def load_private_key_pem(pem: bytes) -> PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("private key is not an ECDSA key")
    return key


def build_csr(key: PrivateKey, identity: SpiffeId) -> bytes:
    """A PEM CSR with an empty subject and the identity as its only (critical) URI SAN."""
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM)


@dataclasses.dataclass(frozen=True)
class CsrRequest:
    """What a verified CSR asks for."""

    identity: SpiffeId
    public_key: ec.EllipticCurvePublicKey


def parse_csr(pem: str | bytes) -> CsrRequest:
    """Parse and verify a CSR: valid signature, exactly one URI SAN that is a SPIFFE ID.

    Raises PkiError with a message a caller can put into a gRPC status.
    """
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError as exc:
        raise PkiError(f"CSR is not valid PEM PKCS#10: {exc}") from exc
    if not csr.is_signature_valid:
        raise PkiError("CSR signature does not verify")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):
        raise PkiError("CSR key must be ECDSA (P-256)")
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise PkiError("CSR has no subjectAltName; it must carry one SPIFFE URI") from exc
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    others = [n for n in san if not isinstance(n, x509.UniformResourceIdentifier)]
    if len(uris) != 1 or others:
        raise PkiError(f"CSR must carry exactly one URI SAN and nothing else, found {list(san)}")
    try:
        identity = SpiffeId.parse(uris[0])
    except InvalidIdentityError as exc:
        raise PkiError(f"CSR SAN is not a SPIFFE identity: {exc}") from exc
    return CsrRequest(identity=identity, public_key=public_key)


@dataclasses.dataclass(frozen=True)
class Issuer:
    """A signing certificate and its key (a root or an intermediate)."""

    certificate: x509.Certificate
    key: PrivateKey


def new_root(trust_domain: str, *, lifetime: dt.timedelta, now: dt.datetime) -> Issuer:
    """A self-signed root for a trust domain (Istio's self-signed root lasts 10 years)."""
    key = new_private_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, trust_domain),
            x509.NameAttribute(NameOID.COMMON_NAME, f"ambient-py root CA ({trust_domain})"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issuer(cert, key)


def sign_workload_certificate(
    issuer: Issuer,
    public_key: ec.EllipticCurvePublicKey,
    identity: SpiffeId,
    *,
    lifetime: dt.timedelta,
    now: dt.datetime,
) -> x509.Certificate:
    """An X.509 leaf for client and server auth whose only SAN is the SPIFFE URI."""
    not_after = min(now + lifetime, issuer.certificate.not_valid_after_utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(issuer.certificate.subject)
        .public_key(public_key)
        .serial_number(_serial())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_encipherment=True, key_cert_sign=False,
                crl_sign=False, content_commitment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity.uri)]),
            critical=True,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()),
            critical=False,
        )
        .sign(issuer.key, hashes.SHA256())
    )


def spiffe_ids_of(cert: x509.Certificate) -> list[SpiffeId]:
    """Every parseable SPIFFE URI SAN of a certificate (DNS and other names are ignored)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    found = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        try:
            found.append(SpiffeId.parse(uri))
        except InvalidIdentityError:
            continue
    return found


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_pem_chain(pem: str | bytes) -> list[x509.Certificate]:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate chain: {exc}") from exc


def _serial() -> int:
    # 159 random bits: positive and within RFC 5280's 20-octet limit.
    return secrets.randbits(159) | 1
