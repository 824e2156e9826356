"""The CA's signing half and root management: lifetimes, chain layout, root sources."""

from __future__ import annotations

import base64
import datetime as dt
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from istiod_lite.ca import roots
from istiod_lite.ca.authority import (
    DEFAULT_CERT_TTL,
    MAX_CERT_TTL,
    CertificateAuthority,
    LifetimePolicy,
)
from istiod_lite.errors import CaConfigError, CaSigningError
from meshcore import pki
from meshcore.identity import SpiffeId

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
ALICE = SpiffeId("cluster.local", "shop", "alice")


def make_ca(trust_domain: str = "cluster.local") -> CertificateAuthority:
    root = pki.new_root(trust_domain, lifetime=dt.timedelta(days=3650), now=NOW)
    return CertificateAuthority(root, trust_domain=trust_domain, clock=lambda: NOW)


@pytest.mark.parametrize(
    ("requested", "granted"),
    [
        pytest.param(0, DEFAULT_CERT_TTL, id="zero means default"),
        pytest.param(-5, DEFAULT_CERT_TTL, id="negative means default"),
        pytest.param(3600, dt.timedelta(hours=1), id="honoured below max"),
        pytest.param(int(MAX_CERT_TTL.total_seconds()), MAX_CERT_TTL, id="exactly max"),
        pytest.param(int(MAX_CERT_TTL.total_seconds()) + 1, MAX_CERT_TTL, id="capped above max"),
    ],
)
def test_lifetime_policy(requested: int, granted: dt.timedelta) -> None:
    """Requested validity ≤ 0 gives the 24 h default; anything above 90 d is capped."""
    assert LifetimePolicy().lifetime_for(requested) == granted


def test_lifetime_policy_rejects_default_above_max() -> None:
    """A default longer than the maximum is an operator error."""
    with pytest.raises(CaConfigError):
        LifetimePolicy(default=dt.timedelta(days=2), maximum=dt.timedelta(days=1))


def test_sign_returns_leaf_then_root_with_identity_eku_and_lifetime() -> None:
    """The chain is [leaf, root], each PEM ending in a newline; the leaf verifies to the root."""
    ca = make_ca()
    key = pki.new_private_key()
    chain = ca.sign(pki.build_csr(key, ALICE), ALICE, 3600)
    assert len(chain) == 2
    assert all(p.endswith("-----END CERTIFICATE-----\n") for p in chain)
    assert chain[1] == ca.root_pem
    leaf, root = pki.load_pem_chain(chain[0])[0], pki.load_pem_chain(chain[1])[0]
    leaf.verify_directly_issued_by(root)
    assert pki.spiffe_ids_of(leaf) == [ALICE]
    assert leaf.public_key() == key.public_key()
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    assert leaf.not_valid_after_utc == NOW + dt.timedelta(hours=1)


@pytest.mark.parametrize(
    ("csr_identity", "requested"),
    [
        pytest.param(ALICE, SpiffeId("cluster.local", "shop", "bob"), id="csr names other"),
        pytest.param(
            SpiffeId("other.td", "shop", "alice"),
            SpiffeId("other.td", "shop", "alice"),
            id="foreign trust domain",
        ),
    ],
)
def test_sign_refuses_what_authz_should_have_refused(
    csr_identity: SpiffeId, requested: SpiffeId
) -> None:
    """sign() re-checks its invariants: never a SAN other than requested, never another domain."""
    ca = make_ca()
    with pytest.raises(CaSigningError):
        ca.sign(pki.build_csr(pki.new_private_key(), csr_identity), requested, 0)


def test_sign_refuses_garbage_csr() -> None:
    """A CSR that does not parse never reaches the signer."""
    with pytest.raises(CaSigningError):
        make_ca().sign("not a csr", ALICE, 0)


def test_leaf_never_outlives_root() -> None:
    """A leaf asked for 90 d from a root with 10 d left ends with the root."""
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=10), now=NOW)
    ca = CertificateAuthority(root, clock=lambda: NOW)
    chain = ca.sign(pki.build_csr(pki.new_private_key(), ALICE), ALICE, 10**9)
    leaf = pki.load_pem_chain(chain[0])[0]
    assert leaf.not_valid_after_utc == root.certificate.not_valid_after_utc


def test_serving_certificate_names_istiod_and_ip() -> None:
    """istiod's serving certificate has its DNS name, the given IP, server auth EKU."""
    ca = make_ca()
    serving = ca.issue_serving_certificate(("istiod.istio-system.svc",), ("127.0.0.1",))
    leaf, root = pki.load_pem_chain(serving.chain_pem)
    leaf.verify_directly_issued_by(root)
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["istiod.istio-system.svc"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert pki.load_private_key_pem(serving.key_pem).public_key() == leaf.public_key()


# Root sources


def test_root_created_once_persisted_and_reloaded(tmp_path: Path) -> None:
    """First start writes root-cert.pem and a 0600 root-key.pem; the next start loads the same."""
    first = roots.load_or_create_root(tmp_path / "ca", trust_domain="cluster.local", now=NOW)
    key_file = tmp_path / "ca" / roots.ROOT_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = roots.load_or_create_root(tmp_path / "ca", trust_domain="cluster.local", now=NOW)
    assert second.certificate == first.certificate
    assert pki.private_key_pem(second.key) == pki.private_key_pem(first.key)


def test_half_a_root_is_refused(tmp_path: Path) -> None:
    """A key without its certificate is an error naming the missing file, never overwritten."""
    roots.load_or_create_root(tmp_path, trust_domain="cluster.local", now=NOW)
    (tmp_path / roots.ROOT_CERT_FILE).unlink()
    with pytest.raises(CaConfigError, match=roots.ROOT_CERT_FILE):
        roots.load_or_create_root(tmp_path, trust_domain="cluster.local", now=NOW)
    assert (tmp_path / roots.ROOT_KEY_FILE).exists()


def _secret(root: pki.Issuer) -> dict[str, str]:
    return {
        "ca-cert.pem": base64.b64encode(pki.cert_pem(root.certificate)).decode(),
        "ca-key.pem": base64.b64encode(pki.private_key_pem(root.key)).decode(),
    }


def test_root_from_secret_data() -> None:
    """A cacerts-style Secret's base64 data gives back the same root."""
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=NOW)
    loaded = roots.root_from_secret_data(_secret(root), now=NOW)
    assert loaded.certificate == root.certificate


def _other_key(data: dict[str, str]) -> dict[str, str]:
    other = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=NOW)
    return {**data, "ca-key.pem": _secret(other)["ca-key.pem"]}


def _leaf_as_root(data: dict[str, str]) -> dict[str, str]:
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=NOW)
    key = pki.new_private_key()
    leaf = pki.sign_workload_certificate(
        root, key.public_key(), ALICE, lifetime=dt.timedelta(days=1), now=NOW
    )
    return {
        "ca-cert.pem": base64.b64encode(pki.cert_pem(leaf)).decode(),
        "ca-key.pem": base64.b64encode(pki.private_key_pem(key)).decode(),
    }


def _intermediate(data: dict[str, str]) -> dict[str, str]:
    other = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=NOW)
    return {**data, "root-cert.pem": _secret(other)["ca-cert.pem"]}


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        pytest.param(lambda d: {"ca-cert.pem": d["ca-cert.pem"]}, "ca-key.pem", id="missing key"),
        pytest.param(lambda d: {**d, "ca-cert.pem": "!!not base64!!"}, "base64", id="not base64"),
        pytest.param(_other_key, "does not belong", id="key of another root"),
        pytest.param(_leaf_as_root, "not a CA", id="leaf instead of CA"),
        pytest.param(_intermediate, "intermediate", id="intermediate CA"),
    ],
)
def test_root_from_secret_data_refusals(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    """Bad Secret data is refused with a message naming the problem."""
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=30), now=NOW)
    with pytest.raises(CaConfigError, match=match):
        roots.root_from_secret_data(mutate(_secret(root)), now=NOW)


def test_expired_root_is_refused() -> None:
    """A root past its notAfter cannot be loaded."""
    root = pki.new_root("cluster.local", lifetime=dt.timedelta(days=1), now=NOW)
    with pytest.raises(CaConfigError, match="not valid now"):
        roots.root_from_secret_data(_secret(root), now=NOW + dt.timedelta(days=2))
