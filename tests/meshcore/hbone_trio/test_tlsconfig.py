"""meshcore.tlsconfig: contexts, cipher-suite restriction, identity checks, the context cache."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from meshcore import pki, tlsconfig
from tests.meshcore.hbone_trio import certs

CLIENT = certs.cached("client")
SERVER = certs.cached("server")


def test_tls13_suites_are_restricted_to_aes_gcm() -> None:
    """Contexts offer only the two AES-GCM TLS 1.3 suites (ChaCha20 is gone)."""
    ctx = tlsconfig.client_context(CLIENT)
    offered = [c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.3"]
    assert offered == list(tlsconfig.ALLOWED_TLS13_SUITES)


def test_check_negotiated_refuses_chacha() -> None:
    """A ChaCha20 suite is refused after the handshake even if the context allowed it."""
    with pytest.raises(tlsconfig.NegotiationError, match="CHACHA20"):
        tlsconfig.check_negotiated("TLSv1.3", "h2", "TLS_CHACHA20_POLY1305_SHA256")


def test_wrong_server_identity_names_both() -> None:
    """A server with the wrong SPIFFE ID is refused with both identities in the message."""
    der = pki.load_pem_chain(SERVER.chain_pem)[0].public_bytes(Encoding.DER)
    want = certs.sa("reviews", "shop")
    with pytest.raises(tlsconfig.PeerIdentityError) as info:
        tlsconfig.verify_server_identity(der, [want])
    assert str(SERVER.identity) in str(info.value)
    assert str(want) in str(info.value)


def test_client_from_other_trust_domain_is_refused() -> None:
    """The server refuses a client whose SPIFFE ID is in another trust domain."""
    other = certs.credentials(certs.sa("x", trust_domain="other.td"))
    der = pki.load_pem_chain(other.chain_pem)[0].public_bytes(Encoding.DER)
    with pytest.raises(tlsconfig.PeerIdentityError, match=r"other\.td"):
        tlsconfig.verify_client_identity(der, "cluster.local")


def test_context_cache_reuses_and_rebuilds() -> None:
    """The cache returns the same context for the same credentials and a new one after rotation."""
    cache = tlsconfig.TlsContextCache()
    first = cache.client(CLIENT)
    assert cache.client(CLIENT) is first
    rotated = certs.credentials(CLIENT.identity)
    assert cache.client(rotated) is not first


def test_credentials_from_pem_reads_identity_and_expiry() -> None:
    """WorkloadCredentials.from_pem takes identity and not_after from the leaf."""
    creds = tlsconfig.WorkloadCredentials.from_pem(
        CLIENT.chain_pem, CLIENT.key_pem, CLIENT.roots_pem
    )
    assert creds == CLIENT



def test_credentials_from_pem_refuses_a_non_p256_key() -> None:
    """Only ECDSA P-256 workload keys are accepted (ztunnel's key type)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    p384 = ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(tlsconfig.TlsConfigError, match="P-256"):
        tlsconfig.WorkloadCredentials.from_pem(CLIENT.chain_pem, p384, CLIENT.roots_pem)
